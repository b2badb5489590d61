import pytest

from unet_tf import sizes


def test_paper_configuration_572_gives_388():
    assert sizes.output_size(572, depth=4, padding="valid") == 388
    assert sizes.input_size_for_output(388, depth=4, padding="valid") == 572


def test_same_padding_needs_multiples_of_two_to_the_depth():
    assert sizes.is_valid_input_size(64, 4, "same")
    assert not sizes.is_valid_input_size(72, 4, "same")
    assert sizes.nearest_valid_input_sizes(72, 4, "same") == (64, 80)
    assert sizes.input_size_for_output(65, 2, "same") == 68


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_bad_size_error_names_the_nearest_valid_sizes(padding):
    bad = 573 if padding == "valid" else 100
    with pytest.raises(ValueError) as err:
        sizes.check_input_size(bad, depth=4, padding=padding)
    below, above = sizes.nearest_valid_input_sizes(bad, 4, padding)
    assert str(below) in str(err.value) and str(above) in str(err.value)
    assert sizes.is_valid_input_size(below, 4, padding) and sizes.is_valid_input_size(above, 4, padding)


def test_valid_sizes_keep_a_constant_margin():
    valid = sizes.valid_input_sizes(100, 700, depth=4, padding="valid")
    assert 572 in valid
    margins = {s - sizes.output_size(s, 4, "valid") for s in valid}
    assert margins == {184}
    steps = {b - a for a, b in zip(valid, valid[1:])}
    assert steps == {16}


def test_too_small_for_valid_padding():
    assert not sizes.is_valid_input_size(16, 4, "valid")
    with pytest.raises(ValueError, match="Nearest valid"):
        sizes.check_input_size(16, 4, "valid")
