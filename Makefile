# The two front-door commands (README.md): `make study` and `make test`.
# Both create .venv with the pinned dependencies on first use; later runs reuse it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= default

.PHONY: study test setup assets browser book pdf check-book clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# setup = the pinned Python packages + the book's offline JavaScript (book/_assets/, fetched
# from the npm registry once; a second run only checks a stamp).
setup: $(VENV)/.installed assets

assets: $(VENV)/.installed
	@$(VENV)/bin/whypretrain assets

# The reader's check of the book: Debian's chromium and playwright-core (tests/ensure_browser.sh;
# installs only what is missing).
browser:
	@bash tests/ensure_browser.sh

study: setup
	$(VENV)/bin/whypretrain study --preset $(PRESET)

test: setup browser
	$(PY) -m pytest -q tests

# Re-execute the notebooks (those whose inputs changed) and rebuild the book, without training
# (a notebook whose results are missing says which command computes them).
book: setup
	$(VENV)/bin/whypretrain book --preset $(PRESET)

# The built book as one PDF, _build/pdf/whypretrain.pdf: every page of _build/html in the order
# of _toc.yml, printed offline by headless Chromium (charts drawn), joined by pypdf. Reads the
# built book only (lib/whypretrain/book/pdf.py); a missing one names `make study` / `make book`.
pdf: $(VENV)/.installed browser
	$(PY) -m whypretrain.book.pdf

# Open every page of the built book in headless Chromium; screenshots into _build/screenshots.
check-book: browser
	$(PY) tests/browser.py _build/html --screenshots _build/screenshots

clean:
	rm -rf _build book/experiments runs results
