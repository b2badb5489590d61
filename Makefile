# unet-tf: `make demo` trains on the built-in synthetic cells, `make test` runs the tests.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo

.PHONY: venv demo test test-slow bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# elasticdeform's published wheel was built against NumPy 1.x: build it here.
	$(BIN)/python -m pip install -q --no-binary elasticdeform -e ".[dev]"
	# TF Serving's protos for warmup records, without a second TensorFlow.
	$(BIN)/python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
	touch $(STAMP)

venv: $(STAMP)

# The demo owns $(DEMO): a new `make demo` starts it afresh.
demo: venv
	rm -rf $(DEMO)
	$(BIN)/python train.py --out $(DEMO) --time-budget 4m30s
	$(BIN)/python export.py $(DEMO) --out $(DEMO)/exports
	$(BIN)/unet-tf predict $(DEMO) $(DEMO)/data/val/images --out $(DEMO)/predictions

test: venv
	$(BIN)/python -m pytest

test-slow: venv
	$(BIN)/python -m pytest -m slow

bench: venv
	$(BIN)/python benchmarks/weight_map.py
	$(BIN)/python benchmarks/augment.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/weight_map_effect.py
	$(BIN)/python benchmarks/plan_quality.py
	$(BIN)/python benchmarks/data_scale.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
