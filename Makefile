# Entry points. Each target sets up first (idempotent, fast when already set up).
VENV ?= .venv
PY := $(VENV)/bin/python
export CRCGS_VENV := $(abspath $(VENV))

.PHONY: setup test lint main clean
setup:
	bash scripts/setup.sh

# The whole test suite, offline.
test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n 2 --dist loadfile -q

lint: setup
	$(PY) -m ruff check .

# The main job: all three stages on the embedded synthetic data, 32 and 64 bits, with evaluation.
main: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--mixed_precision no --dynamo_backend no training/train.py --config training/configs/synthetic.yaml \
		--overwrite_output_dir

clean:
	rm -rf $(VENV) outputs .pytest_cache
