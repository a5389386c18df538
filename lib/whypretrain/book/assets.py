"""The book's offline JavaScript, fetched once from the npm registry (``whypretrain assets``,
run by ``make setup``); nothing else in the study needs the network.

``ensure_assets(root)`` fills ``book/_assets/wp/`` (served by the book as ``_static/wp/``):

- ``vega-bundle.js``: vega, vega-lite (Altair's version) and vega-embed, from vl-convert,
  wrapped in a function so its top-level names do not clash with Sphinx's;
- ``require.js``, ``widgets/`` (``@jupyter-widgets/html-manager``'s ``embed-amd.js`` and its
  fonts) and ``mathjax/`` (MathJax 3's tex-mml-chtml component and what it loads), each from a
  pinned npm tarball whose sha512 is checked.

A stamp (``book/_assets/versions.json``) with the pinned versions makes a second call instant.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterable

from whypretrain.distributed import say

ASSETS = "book/_assets"            # fetched / generated JavaScript (git-ignored)

# Pinned offline JavaScript of the book (npm registry; sha512 checked after download).
NPM_PINS: dict[str, tuple[str, str]] = {
    "requirejs": ("2.3.8", "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c"
                           "+Jd5otXKGNehIonFlyQXSowL6Mw=="),
    "@jupyter-widgets/html-manager": ("1.0.15", "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4x"
                                                "JDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
    "mathjax": ("3.2.2", "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsj"
                         "KPZGJvtRZM1vO+geW0OhGw=="),
}
# The parts of MathJax's es5/ folder the book loads (the rest of the package is not served).
_MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js", "ui", "a11y",
                  "sre", "adaptors")


def _vegalite_version() -> str:
    import altair as alt

    return alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # "v6.4.1" -> "6.4"


def _asset_pins() -> dict[str, str]:
    import vl_convert

    return {**{name: ver for name, (ver, _) in NPM_PINS.items()},
            "vega-lite": _vegalite_version(), "vl-convert-python": vl_convert.__version__}


def _fetch_npm(name: str, version: str, integrity: str, dest: Path) -> Path:
    """The package tarball, by ``npm pack`` (or the registry's tarball URL when npm is
    missing), its sha512 checked against the pin."""
    dest.mkdir(parents=True, exist_ok=True)
    tarball = None
    if shutil.which("npm"):
        out = subprocess.run(["npm", "pack", "--silent", f"{name}@{version}",
                              "--pack-destination", str(dest)], capture_output=True, text=True,
                             cwd=dest)
        if out.returncode == 0 and out.stdout.strip():
            tarball = dest / out.stdout.strip().splitlines()[-1]
    if tarball is None or not tarball.is_file():
        base = name.split("/")[-1]
        url = f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"
        tarball = dest / f"{base}-{version}.tgz"
        with urllib.request.urlopen(url, timeout=120) as resp:
            tarball.write_bytes(resp.read())
    algo, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"{name}@{version}: integrity mismatch ({tarball})")
    return tarball


def _extract(tarball: Path, members: Iterable[str], dest: Path) -> None:
    """Copy ``package/<member>`` (files or folders) of an npm tarball to ``dest/<member>``."""
    members = [m.rstrip("/") for m in members]
    with tarfile.open(tarball) as tar:
        for info in tar.getmembers():
            rel = info.name.removeprefix("package/")
            if not info.isfile() or not any(rel == m or rel.startswith(m + "/") for m in members):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(info) as src:  # type: ignore[union-attr]
                out.write_bytes(src.read())


def ensure_assets(root: str | os.PathLike, quiet: bool = False) -> Path:
    """Fetch / generate the book's offline JavaScript into ``book/_assets/wp`` (idempotent).
    Returns the folder."""
    root = Path(root)
    folder = root / ASSETS / "wp"
    stamp = root / ASSETS / "versions.json"
    pins = _asset_pins()
    if stamp.is_file() and json.loads(stamp.read_text()) == pins:
        return folder
    start = time.perf_counter()
    if not quiet:
        say(f"fetching the book's offline JavaScript into {folder} ...")
    tmp = Path(tempfile.mkdtemp(prefix=".assets-", dir=root / ASSETS if (root / ASSETS).is_dir()
                                else None))
    try:
        new = tmp / "wp"
        new.mkdir()
        import vl_convert

        bundle = vl_convert.javascript_bundle(vl_version=pins["vega-lite"])
        (new / "vega-bundle.js").write_text(
            f"/* vega + vega-lite {pins['vega-lite']} + vega-embed, bundled by vl-convert "
            f"{pins['vl-convert-python']} */\n(function(){{\n{bundle}\n}})();\n")
        tarballs = {name: _fetch_npm(name, ver, integ, tmp / "npm")
                    for name, (ver, integ) in NPM_PINS.items()}
        _extract(tarballs["requirejs"], ["require.js"], new)
        _extract(tarballs["@jupyter-widgets/html-manager"], ["dist"], new / "widgets-pkg")
        widgets = new / "widgets"
        widgets.mkdir()
        for path in (new / "widgets-pkg" / "dist").iterdir():
            # embed-amd.js and the fonts it names by hash; not the maps or the non-AMD build.
            if path.name == "embed-amd.js" or path.suffix in (".woff", ".woff2", ".ttf", ".eot",
                                                             ".svg"):
                shutil.move(str(path), widgets / path.name)
        shutil.rmtree(new / "widgets-pkg")
        _extract(tarballs["mathjax"], [f"es5/{p}" for p in _MATHJAX_PARTS], new / "mathjax-pkg")
        shutil.move(str(new / "mathjax-pkg" / "es5"), new / "mathjax")
        shutil.rmtree(new / "mathjax-pkg")
        (root / ASSETS).mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(new), folder)
        stamp.write_text(json.dumps(pins, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        say(f"  done in {time.perf_counter() - start:.1f} s ({pins})")
    return folder
