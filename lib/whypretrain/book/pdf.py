"""The built book as one PDF: ``make pdf`` (``python -m whypretrain.book.pdf``).

Reads ``_build/html`` only and computes nothing: every page of ``_toc.yml``, in its order, is
printed by headless Chromium (the Vega charts render from the book's own JavaScript, given a
virtual-time budget to draw; every request outside the machine goes to a closed proxy, so the
print is offline), and pypdf joins the pages into ``_build/pdf/whypretrain.pdf``, with one
bookmark per page named by its title. The file is written whole or not at all.

Chromium is Debian's (``bash tests/ensure_browser.sh``, which ``make test`` runs, installs it).
A missing book or browser is one line that says what to run (exit status 2).
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from whypretrain.errors import UserError

PDF = "_build/pdf/whypretrain.pdf"
HTML = "_build/html"
BUDGET_MS = 15_000  # virtual time a page gets to draw its charts before it is printed
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class MissingBook(UserError):
    """No built book (or a page of the toc missing from it)."""


def browser() -> str:
    """The Chromium to print with; ``UserError`` naming the installer when there is none."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise UserError("no Chromium to print the book with: run `bash tests/ensure_browser.sh` "
                    "(or `make browser`)")


def pages(root: Path, built: Path) -> list[Path]:
    """The built pages of ``_toc.yml``, in its order. ``MissingBook`` when the book or one of
    its pages is not built."""
    import yaml

    # layout's own walk of the toc (layout.py is left as it is: every stored study part's code
    # key covers it, through the catalogue)
    from whypretrain.layout import _toc_files

    if not (built / "index.html").is_file():
        raise MissingBook(f"no built book in {built}: run `make study` (computes the study and "
                          "builds the book) or `make book` (builds it from a stored study)")
    out = []
    for entry in _toc_files(yaml.safe_load((root / "_toc.yml").read_text())):
        page = built / f"{re.sub(r'[.](ipynb|md)$', '', entry)}.html"
        if not page.is_file():
            raise MissingBook(f"{page} is in _toc.yml but not in the built book: run "
                              "`make book`")
        out.append(page)
    return out


def title(page: Path) -> str:
    """The page's title, less the book's name that the theme appends."""
    found = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"), re.S)
    text = html.unescape(found.group(1)).strip() if found else page.stem
    return re.split(r"\s+[—–-]\s+", text)[0].strip() or page.stem


def print_page(chromium: str, page: Path, out: Path, profile: Path,
               budget_ms: int = BUDGET_MS) -> Path:
    """One page printed to ``out`` by headless Chromium, offline."""
    cmd = [chromium, "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",
           "--proxy-bypass-list=<-loopback>", "--run-all-compositor-stages-before-draw",
           f"--virtual-time-budget={budget_ms}", "--no-pdf-header-footer",
           f"--print-to-pdf={out}", page.resolve().as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")  # Chromium refuses root without it (containers)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium could not print {page}:\n{proc.stderr[-2000:]}")
    return out


def write_pdf(root: str | os.PathLike, out: str | os.PathLike | None = None,
              budget_ms: int = BUDGET_MS) -> Path:
    """Every page of the built book of ``root`` in one PDF (default ``<root>/_build/pdf/
    whypretrain.pdf``), in the order of ``_toc.yml``. Returns its path."""
    from pypdf import PdfReader, PdfWriter

    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / PDF
    built = pages(root, root / HTML)
    chromium = browser()
    writer = PdfWriter()
    with tempfile.TemporaryDirectory(prefix="whypretrain-pdf-") as tmp:
        for i, page in enumerate(built):
            printed = print_page(chromium, page, Path(tmp) / f"{i:03d}.pdf",
                                 Path(tmp) / "profile", budget_ms)
            start = len(writer.pages)
            writer.append(PdfReader(printed))
            writer.add_outline_item(title=title(page), page_number=start)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.tmp{os.getpid()}")
        with open(partial, "wb") as f:
            writer.write(f)
        os.replace(partial, out)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from whypretrain.layout import find_root

    parser = argparse.ArgumentParser(prog="python -m whypretrain.book.pdf",
                                     description="the built book (_build/html) as one PDF")
    parser.add_argument("--root", default=None, help="the repository (the folder with _toc.yml)")
    parser.add_argument("--out", default=None, help=f"the PDF (default: {PDF})")
    args = parser.parse_args(argv)
    try:
        path = write_pdf(find_root(args.root, fallback=args.root is None), args.out)
    except (UserError, FileNotFoundError) as err:
        print(f"whypretrain pdf: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    from pypdf import PdfReader

    print(f"{path}: {len(PdfReader(path).pages)} pages, {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
