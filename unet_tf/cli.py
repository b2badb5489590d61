"""The ``unet-tf`` command line: train, predict, evaluate, export, check-data, pack.

Every command is a thin layer over a library function; errors in the user's
input (options, files, data) print one clear message and exit with status 1
(click's usage errors exit with 2).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from pathlib import Path

import click

from .config import PRESETS, TrainConfig, load_config_file
from .errors import UnetTfError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's start-up lines that ignore TF_CPP_MIN_LOG_LEVEL (absl logs
# before its logging is set up): on a CPU machine they include an alarming
# "E0000 ... failed call to cuInit" that means nothing more than "no GPU".
_TF_NOISE = (b"All log messages before absl::InitializeLog()", b"oneDNN custom operations",
             b"cudart_stub.cc", b"cuda_platform.cc", b"cuda_executor.cc", b"Unable to register cu",
             b"computation_placer.cc", b"cpu_feature_guard.cc", b"TF-TRT Warning",
             b"To enable the following instructions")


def _is_noise(line: bytes) -> bool:
    # Fatal lines ("F0000 ...", e.g. a CPU without AVX) always get through.
    return not line.startswith(b"F") and any(noise in line for noise in _TF_NOISE)


def _start_tensorflow() -> None:
    """Import TensorFlow and find its devices with that chatter filtered out of
    stderr; everything else passes through as it is written, so a crash inside
    TensorFlow still shows its message. TF_CPP_MIN_LOG_LEVEL=0 shows it all."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    import threading
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _is_noise(line):
                    os.write(saved, line)

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        import tensorflow as tf
        tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join(timeout=5)
        os.close(saved)


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _user_errors(func):
    """Turn the library's input errors into a message and exit status 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (UnetTfError, ValueError, FileExistsError, FileNotFoundError) as err:
            _fail(str(err))
        except OSError as err:  # e.g. a read-only or full --out
            where = err.filename or "a file"
            _fail(f"{where}: cannot write or read it ({err.strerror or err}); check the "
                  "path and its permissions")
        except RecursionError:
            _fail("an input file is nested too deeply to read (a classes.json or config file?)")
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="unet-tf")
def main():
    """U-Net segmentation: train, predict, evaluate, export (TF Serving, LiteRT)."""


# --------------------------------------------------------------------------- train
def _click_type(f: dataclasses.Field):
    """click type of a TrainConfig field, from its annotation ("int | None" -> int)."""
    if f.metadata.get("choices"):
        return click.Choice(f.metadata["choices"])
    name = str(f.type).replace("| None", "").strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def _train_options(func):
    """One ``--option`` per TrainConfig field, in the dataclass's order."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        name = f.name.replace("_", "-")
        kind = _click_type(f)
        help_text = f.metadata.get("help", "")
        if kind is bool:
            option = click.option(f"--{name}/--no-{name}", f.name, default=f.default,
                                  show_default=True, help=help_text)
        else:
            option = click.option(f"--{name}", f.name, type=kind, default=f.default,
                                  show_default=f.default is not None, help=help_text)
        func = option(func)
    return func


def resolve_train_config(ctx: click.Context, preset: str | None, config_file: str | None,
                         values: dict) -> tuple[TrainConfig, set[str]]:
    """Defaults < preset < config file < options given on the command line.

    ``--resume`` starts from the run's own ``config.json`` instead of the
    defaults, so only the options given now count as changes.

    Returns:
        The configuration, and the names of the options the user gave (a
        preset's, the file's, the command line's): the plan leaves those alone.
    """
    resolved = _stored_config(values) if values.get("resume") else {}
    explicit = set()
    if preset:
        resolved.update(PRESETS[preset])
        explicit |= set(PRESETS[preset])
    if config_file:
        from_file = load_config_file(config_file)
        resolved.update(from_file)
        explicit |= set(from_file)
    for key, value in values.items():
        if ctx.get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE:
            resolved[key] = value
            explicit.add(key)
    return TrainConfig.from_dict(resolved), explicit


def _stored_config(values: dict) -> dict:
    path = Path(values.get("out") or "") / "config.json"
    if not values.get("out") or not path.is_file():
        return {}
    import json
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the run folder is damaged") from None


@main.command("train", context_settings={"show_default": True})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML or JSON file of options (keys as below, '-' or '_'); command-line options win.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="paper: the 2015 paper's configuration; small: the quick demo model.")
@click.option("--stream/--in-memory", "stream", default=None,
              help="Shorthand for --data-path stream / --data-path memory.")
@_train_options
@click.pass_context
@_user_errors
def train_command(ctx, config_file, preset, stream, **values):
    """Train a U-Net; with no options, a small one on the built-in synthetic cells."""
    config, explicit = resolve_train_config(ctx, preset, config_file, values)
    if stream is not None:
        chosen = "stream" if stream else "memory"
        if "data_path" in explicit and config.data_path != chosen:
            raise click.UsageError(f"--{'stream' if stream else 'in-memory'} contradicts "
                                   f"--data-path {config.data_path}; give one of them")
        config, explicit = config.replace(data_path=chosen), explicit | {"data_path"}
    _start_tensorflow()
    from .training import train
    result = train(config, explicit)
    if result.finished_before:
        return
    if result.report:
        report = result.report
        click.echo(f"\nRun folder: {result.out}")
        click.echo(f"Validation dice {report['dice']:.4f}, mean IoU {report['mean_iou']:.4f}, "
                   f"pixel accuracy {report['pixel_accuracy']:.4f} "
                   f"({report['images']} {report['split']} images, best epoch {report.get('best_epoch')})")


@main.command("plan", context_settings={"show_default": True})
@click.argument("data", type=click.Path())
@click.option("--out", default="plan.json", help="Where to write the plan (JSON).")
@click.option("--time-budget", default="15m", help="Training time to plan for (e.g. 90s, 15m, 1h30m).")
@click.option("--memory-budget", default="auto", help="Memory to plan tiles and batches for (e.g. 8G).")
@click.option("--num-classes", type=click.IntRange(1, 1024), default=None,
              help="Classes in the masks (default: inferred).")
@click.option("--ignore-index", type=int, default=255, help="Label value of void pixels.")
@click.option("--measure/--estimate", default=True,
              help="Time real training steps (a minute or so) or estimate them from FLOPs.")
@_user_errors
def plan_command(data, out, time_budget, memory_budget, num_classes, ignore_index, measure):
    """Fingerprint DATA and print the training plan with the reason for every choice."""
    config = TrainConfig(data=data, time_budget=time_budget, memory_budget=memory_budget,
                         num_classes=num_classes, ignore_index=ignore_index)
    _start_tensorflow()
    from .autoplan import plan_dataset
    from .files import atomic_write_json
    from .plan import format_plan
    plan = plan_dataset(config, measure=measure, log=lambda m: click.echo(m, err=True))
    click.echo(format_plan(plan))
    atomic_write_json(Path(out), plan.to_dict())
    click.echo(f"Plan: {out}")


# --------------------------------------------------------------------------- data
@main.command("check-data")
@click.argument("data", type=click.Path())
@click.option("--num-classes", type=click.IntRange(1, 1024), default=None,
              help="Classes in the masks (default: inferred).")
@click.option("--ignore-index", type=int, default=255, show_default=True, help="Label value of void pixels.")
def check_data_command(data, num_classes, ignore_index):
    """Validate a dataset folder: print a summary, or every problem found (exit 1).

    A shard folder (unet-tf pack) gets its summary, and every shard is read back."""
    if "://" in data or (Path(data) / "dataset.json").is_file():
        _start_tensorflow()
        from .data.shards import format_summary, is_shard_folder
        if is_shard_folder(data):
            try:
                text, ok = format_summary(data)
            except UnetTfError as err:
                _fail(str(err))
            click.echo(text)
            sys.exit(0 if ok else 1)
    from .data.check import check_dataset, format_report
    report = check_dataset(data, num_classes=num_classes, ignore_index=ignore_index)
    click.echo(format_report(report))
    sys.exit(0 if report.ok else 1)


@main.command("pack", context_settings={"show_default": True})
@click.argument("data", type=click.Path())
@click.option("--out", required=True,
              help="Shard folder to write: a new folder, or an interrupted pack to finish "
                   "(gs:// and the other TensorFlow file systems work).")
@click.option("--shard-size", default="150M", help="Size of each shard (e.g. 100M, 200M).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2,
              help="Share held out for validation when DATA has no val/ split (fixed in the shards).")
@click.option("--seed", type=int, default=0, help="Seed of that split.")
@click.option("--num-classes", type=click.IntRange(1, 1024), default=None,
              help="Classes in the masks (default: inferred).")
@click.option("--ignore-index", type=int, default=255, help="Label value of void pixels.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Shards written at once (default: the CPU count).")
@_user_errors
def pack_command(data, out, shard_size, val_fraction, seed, num_classes, ignore_index, workers):
    """Check DATA and write it once as TFRecord shards, for datasets larger than memory
    (train --data SHARDS reads them with parallel interleaved reads)."""
    from .plan import parse_bytes
    size = parse_bytes(shard_size, option="--shard-size")
    _start_tensorflow()
    from .data.shards import pack
    result = pack(data, out, shard_size=size, val_fraction=val_fraction, seed=seed,
                  num_classes=num_classes, ignore_index=ignore_index, workers=workers,
                  progress=True, log=lambda message: click.echo(message, err=True))
    if result.already:
        return
    records = {split: info["images"] for split, info in result.meta["splits"].items()}
    kept = f", kept {result.skipped} from the interrupted pack" if result.skipped else ""
    click.echo(f"Packed {', '.join(f'{n} {split}' for split, n in records.items())} images into "
               f"{len(result.meta['shards'])} shards ({result.written} written now{kept}): {out}")


# --------------------------------------------------------------------------- export
def _parse_size(ctx, param, values):
    parsed = []
    for value in values:
        try:
            h, _, w = value.lower().partition("x")
            parsed.append((int(h), int(w or h)))
        except ValueError:
            raise click.BadParameter(f"{value!r}: write sizes as HxW, for example 256x256",
                                     param_hint="'--tflite-size'") from None
        if min(parsed[-1]) < 1:
            raise click.BadParameter(f"{value!r}: sizes must be positive",
                                     param_hint="'--tflite-size'")
    return parsed


@main.command("export", context_settings={"show_default": True})
@click.argument("model", type=click.Path())
@click.option("--out", default="exports", help="Output folder (TF Serving layout OUT/<name>/<version>).")
@click.option("--name", default="unet", help="Model name for TF Serving.")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="Version (default: the next free number).")
@click.option("--force", is_flag=True, help="Replace an existing version.")
@click.option("--tflite-size", "tflite_sizes", multiple=True, callback=_parse_size, default=["256x256"],
              help="Fixed TFLite input shape HxW; repeat for several.")
@click.option("--tflite-variant", "tflite_variants", multiple=True,
              type=click.Choice(["float32", "float16", "dynamic_int8", "int8"]),
              default=["float32", "float16", "dynamic_int8", "int8"], help="TFLite variants; repeatable.")
@click.option("--no-tflite", is_flag=True, help="Only the SavedModel.")
@click.option("--data", default=None, help="Dataset for int8 calibration (default: the run's dataset).")
@_user_errors
def export_command(model, out, name, version, force, tflite_sizes, tflite_variants, no_tflite, data):
    """Export MODEL (a .keras file or a run folder) to a SavedModel and TFLite files, verified."""
    _start_tensorflow()
    from .deploy import ExportOptions, export_model
    options = ExportOptions(name=name, version=version, force=force,
                            tflite_sizes=[] if no_tflite else list(tflite_sizes),
                            tflite_variants=() if no_tflite else tuple(tflite_variants))
    export_model(model, out, data=data, options=options, log=click.echo)
    click.echo(f"Report: {Path(out) / 'export_report.json'}")


# --------------------------------------------------------------------------- predict / evaluate
def _instance_options(func):
    """--min-size, --seed-distance, --instance-method: how instance maps are cut
    (``unet_tf.objects.to_instances``), shared by predict and evaluate."""
    options = [
        click.option("--min-size", type=click.IntRange(min=0), default=15,
                     help="Smallest object kept, in pixels; smaller ones are merged into a "
                          "neighbour or removed."),
        click.option("--seed-distance", type=click.FloatRange(min=1.0), default=5.0,
                     help="Distance maxima closer than this (pixels) seed one object; "
                          "larger values split less."),
        click.option("--instance-method", type=click.Choice(["watershed", "components"]),
                     default="watershed",
                     help="watershed: connected components, touching objects split by a seeded "
                          "watershed; components: connected components only."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command("predict", context_settings={"show_default": True})
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="predictions", help="Output folder.")
@click.option("--tile-size", type=click.IntRange(min=1), default=None,
              help="Input tile size (default: about 512, or the TFLite shape).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, help="Tiles per model call.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5,
              help="Probability threshold of binary models.")
@click.option("--tta/--no-tta", default=False, help="Average predictions over flips.")
@click.option("--probabilities/--no-probabilities", default=False, help="Also write probability maps (.npy).")
@click.option("--overlays/--no-overlays", default=True, help="Also write overlays (png).")
@click.option("--instances/--no-instances", default=False,
              help="Also write <name>_instances.png (16-bit object ids, 0 = background) and "
                   "<name>_instances_overlay.png (each object outlined in its own colour).")
@_instance_options
@_user_errors
def predict_command(model, inputs, out, tile_size, batch_size, threshold, tta, probabilities, overlays,
                    instances, min_size, seed_distance, instance_method):
    """Segment images (files or folders) with MODEL: .keras, a run folder, a SavedModel or .tflite."""
    _start_tensorflow()
    from .predict import predict_files
    written = predict_files(model, inputs, out, tile_size=tile_size, batch_size=batch_size,
                            threshold=threshold, tta=tta, probabilities=probabilities,
                            overlays=overlays, progress=True, instances=instances,
                            min_size=min_size, seed_distance=seed_distance,
                            instance_method=instance_method)
    click.echo(f"Wrote {len(written)} masks{' and instance maps' if instances else ''} to {out}")


@main.command("evaluate", context_settings={"show_default": True})
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--split", type=click.Choice(["val", "test", "train", "all"]), default=None,
              help="Which images (default: labelled test images if present, else val, else the "
                   "images the run held out for validation when MODEL is a run on DATA, else all; "
                   "val also means those held-out images).")
@click.option("--out", default=None, help="JSON report path (default: MODEL's folder/evaluation.json).")
@click.option("--tile-size", type=click.IntRange(min=1), default=None, help="Input tile size.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5,
              help="Probability threshold of binary models.")
@click.option("--tta/--no-tta", default=False, help="Average predictions over flips.")
@_instance_options
@_user_errors
def evaluate_command(model, data, split, out, tile_size, threshold, tta, min_size, seed_distance,
                     instance_method):
    """Score MODEL on the labelled images of DATA: dice, IoU, accuracy, and for binary and
    instance data object metrics (precision, recall, F1, AP, PQ, mean AP) of its instance maps."""
    _start_tensorflow()
    from .evaluate import evaluate_folder, format_evaluation
    result = evaluate_folder(model, data, split=split, out=out, tile_size=tile_size,
                             threshold=threshold, tta=tta, min_size=min_size,
                             seed_distance=seed_distance, instance_method=instance_method)
    click.echo(format_evaluation(result))
    click.echo(f"Report: {result['report_path']}")


if __name__ == "__main__":  # pragma: no cover
    main()
