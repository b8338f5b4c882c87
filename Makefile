# Two entry points for a fresh clone: `make demo` (environment + main job on the embedded sample)
# and `make test` (environment + the whole test suite). Everything else is in the README.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test clean-demo

# The venv is rebuilt when the pinned set or the package metadata changes.
$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup_env.sh
	bash scripts/setup_env.sh $(PYTHON) $(VENV)
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(BIN)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The GPU check (bench/gpu_check.py, README "GPU check"): on a connected machine `make gpu-wheels` fetches the
# pure-Python packages srdistill needs beyond torch/numpy (and PyWavelets, compiled for CPython 3.12) into .whl/ (pinned by the constraints; no Ray); copy
# the checkout with .whl/ to the CUDA machine and run `make gpu-check` there (its own python3 and PyTorch).
GPU_WHEELS := diffusers peft accelerate huggingface_hub transformers open-clip-torch timm ftfy wcwidth \
	webdataset braceexpand pyiqa addict einops future yapf facexlib ptwt icecream executing asttokens \
	colorama importlib_metadata zipp tqdm
GPU_SDIST_WHEELS := openai-clip   # published as a source archive only: built here into a pure wheel
# compiled for the GPU machines' CPython 3.12 on x86-64 Linux (manylinux): PyWavelets (ptwt's DWT, VPD-SR's L_HFP)
GPU_COMPILED_WHEELS := PyWavelets
GPU_COMPILED_PATTERN := -cp312-cp312-manylinux[^/]*x86_64\.whl$$
GPU_WHEELS_MAX_MIB := 40
GPU_PYTHON ?= python3

.PHONY: gpu-wheels gpu-check

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(GPU_PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation py --abi none --platform any \
		--python-version 3.12 -c requirements/constraints.txt -d .whl $(GPU_WHEELS)
	$(GPU_PYTHON) -m pip wheel --quiet --no-deps -c requirements/constraints.txt -w .whl $(GPU_SDIST_WHEELS)
	$(GPU_PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --abi cp312 \
		--python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -c requirements/constraints.txt -d .whl $(GPU_COMPILED_WHEELS)
	@! ls .whl | grep -v -- '-none-any.whl$$' | grep -v -E -- '$(GPU_COMPILED_PATTERN)' || \
		{ echo "gpu-wheels: the wheels above are neither pure Python nor CPython 3.12 manylinux x86-64" >&2; exit 1; }
	@mib=$$(du -sm .whl | cut -f1); echo "gpu-wheels: $$(ls .whl | wc -l) wheels, $$mib MiB in .whl/"; \
		test $$mib -le $(GPU_WHEELS_MAX_MIB) || { echo "gpu-wheels: over $(GPU_WHEELS_MAX_MIB) MiB" >&2; exit 1; }

gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py --out gpu-check $(GPU_CHECK_ARGS)
