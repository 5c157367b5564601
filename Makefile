# Handles Studio — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

# pyright (PyPI wrapper) runs the pyright bundled in its wheel on the system node (nodeenv only
# when there is no node on PATH) and skips its "newer version on PyPI" check: no network needed.
export PYRIGHT_PYTHON_GLOBAL_NODE := 1
export PYRIGHT_PYTHON_NODEJS_WHEEL := 0
export PYRIGHT_PYTHON_IGNORE_WARNINGS := 1

.PHONY: run test sysdeps venv venv-dev lint lint-imports bench bench-render bench-viewport bench-editor bench-quality train-world clean

run: venv
	$(PY) main.py $(ARGS)

# `make lint` first, then two pytest runs: everything but GL on Qt's offscreen platform, then the
# GL tests on a real X display (a virtual one when there is none). pytest exit code 5 (no tests)
# fails either run.
test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not gl" $(PYTEST_ARGS)
	QT_QPA_PLATFORM=xcb HANDLES_STUDIO_REQUIRE_GL=1 scripts/with-display.sh $(PY) -m pytest -m gl $(PYTEST_ARGS)

sysdeps:
	@scripts/sysdeps.sh

$(VENV)/.stamp-run: requirements.txt pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps --no-build-isolation -e . 2>/dev/null || $(PIP) install --no-deps -e .
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	@touch $@

venv: sysdeps $(VENV)/.stamp-run
venv-dev: sysdeps $(VENV)/.stamp-dev

# Lint, formatting, types (pyright over core/) and the import-layer contracts, in that order.
lint: venv-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright
	$(VENV)/bin/lint-imports --no-cache

lint-imports: venv-dev
	$(VENV)/bin/lint-imports --no-cache

bench: venv
	$(PY) -m benchmarks.geometry

bench-render: venv
	$(PY) -m benchmarks.render

# Diffusion Handles against ray-cast ground truth on the bundled world model (a table, ~15 min on 2 cores)
bench-quality: venv
	$(PY) -m benchmarks.quality $(ARGS)

# Retrain the bundled world model from scratch (data, VAE, UNet + text encoder; checkpoints and
# resumes in artifacts/world-train; about 75 min on 2 idle CPU cores (VAE 0.7 s and UNet ~2 s a step; 90 min and more when other work runs beside it), minutes on a GPU). ARGS=--install
# replaces resources/models/world with the result.
train-world: venv
	$(PY) -m training.world $(ARGS)

bench-editor: venv
	QT_QPA_PLATFORM=offscreen $(PY) -m benchmarks.editor

bench-viewport: venv
	scripts/with-display.sh $(PY) -m benchmarks.viewport

clean:
	rm -rf $(VENV) .pytest_cache artifacts
