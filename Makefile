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

# Not `python -m pytest`: that puts the repo root on sys.path, where datasets/ would shadow HF `datasets`.
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)
