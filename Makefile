# The two front-door commands (README.md): `make study` and `make test`.
# Both create .venv with the pinned dependencies on first use; later runs reuse it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= default

.PHONY: study test setup clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

study: setup
	$(VENV)/bin/whypretrain study --preset $(PRESET)

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf _build book/experiments runs results
