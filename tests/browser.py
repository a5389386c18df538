"""The reader's check of a built book, from Python (wraps ``tests/browser_check.js``).

    from browser import check_book, problems
    report = check_book("_build/html", screenshots="shots/", shot_pages=["book/index.html"])
    assert not problems(report)

or from a shell: ``python tests/browser.py _build/html [--screenshots DIR] [--pages a,b]``
(prints the per-page table and exits 1 when a page has a problem). ``bash tests/ensure_browser.sh``
installs what it needs (Debian's chromium, playwright-core from npm) when missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = HERE / "browser_check.js"
ENSURE = HERE / "ensure_browser.sh"

# Console errors of jupyter-book 1's own theme that change nothing a reader sees:
# sphinx-thebe's config script is included twice (a `const` declared twice; thebe stays off),
# and pydata-sphinx-theme complains once about an unset colour mode before it picks "auto".
KNOWN_HARMLESS = ("Identifier 'THEBE_JS_URL' has already been declared",
                  "Got invalid theme mode")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ready() -> bool:
    """True when chromium, node and playwright-core are all present."""
    return bool(chromium_path() and shutil.which("node")
                and (ROOT / "node_modules" / "playwright-core" / "index.js").is_file())


def ensure() -> None:
    """Install what is missing (idempotent; quick when everything is there)."""
    if not ready():
        subprocess.run(["bash", str(ENSURE)], check=True, timeout=1800)  # apt-get, npm at most


def check_book(html_dir: str | os.PathLike, pages: Iterable[str] | None = None,
               screenshots: str | os.PathLike | None = None,
               shot_pages: Iterable[str] | None = None, timeout_ms: int = 20000,
               width: int = 1200) -> dict[str, Any]:
    """Open every page (or ``pages``, paths relative to ``html_dir``) of a built book in headless
    Chromium; returns ``{"pages": [{page, outside_requests, failed_requests, charts, widgets,
    math, errors, screenshot?}, ...]}``. Screenshots (full page PNGs) of ``shot_pages`` (all pages
    when None) go to ``screenshots`` when given."""
    ensure()
    cmd = ["node", str(SCRIPT), str(html_dir), "--timeout-ms", str(timeout_ms),
           "--width", str(width)]
    if pages:
        cmd += ["--pages", ",".join(pages)]
    if screenshots:
        cmd += ["--screenshots", str(screenshots)]
        if shot_pages:
            cmd += ["--shot-pages", ",".join(shot_pages)]
    chromium = chromium_path()
    if chromium:
        cmd += ["--chromium", chromium]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"browser check failed to run:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def problems(report: dict[str, Any], allow_errors: Iterable[str] = KNOWN_HARMLESS) -> list[str]:
    """What a reader would notice, one line per problem; empty when every page is fine."""
    out = []
    for page in report["pages"]:
        name = page["page"]
        if page.get("redirect"):
            continue
        for url in page["outside_requests"]:
            out.append(f"{name}: request outside 127.0.0.1: {url}")
        for url in page["failed_requests"]:
            out.append(f"{name}: local request failed: {url}")
        for err in page["errors"]:
            if not any(known in err for known in allow_errors):
                out.append(f"{name}: error: {err}")
        if "charts" not in page:
            continue
        charts, widgets, math = page["charts"], page["widgets"], page["math"]
        if charts["drawn"] < charts["total"] or charts["errors"]:
            out.append(f"{name}: {charts['drawn']} of {charts['total']} charts drawn "
                       f"{charts['errors']}")
        if widgets["rendered"] < widgets["total"]:
            out.append(f"{name}: {widgets['rendered']} of {widgets['total']} widgets rendered")
        if math["total"] and not math["rendered"]:
            out.append(f"{name}: {math['total']} math elements, none rendered by MathJax")
    return out


def outside_requests(report: dict[str, Any]) -> int:
    return sum(len(p["outside_requests"]) for p in report["pages"])


def table(report: dict[str, Any]) -> str:
    lines = [f"{'page':<40} {'outside':>7} {'charts':>9} {'widgets':>9} {'math':>9}"]
    for p in report["pages"]:
        if p.get("redirect"):
            lines.append(f"{p['page']:<40} (redirect to {p['redirect']})")
            continue
        c, w, m = (p.get(k, {"total": 0}) for k in ("charts", "widgets", "math"))
        lines.append(f"{p['page']:<40} {len(p['outside_requests']):>7} "
                     f"{c.get('drawn', 0):>4}/{c['total']:<4} {w.get('rendered', 0):>4}/{w['total']:<4} "
                     f"{m.get('rendered', 0):>4}/{m['total']:<4}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--pages", default="")
    parser.add_argument("--screenshots", default=None)
    parser.add_argument("--shot-pages", default="")
    parser.add_argument("--json", default=None, help="also write the full report here")
    args = parser.parse_args(argv)
    report = check_book(args.html_dir, pages=[p for p in args.pages.split(",") if p] or None,
                        screenshots=args.screenshots,
                        shot_pages=[p for p in args.shot_pages.split(",") if p] or None)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(table(report))
    found = problems(report)
    print(f"\n{outside_requests(report)} outside requests; "
          f"{len(found)} problems" + ("".join(f"\n  {p}" for p in found)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
