"""The ``whypretrain`` command, the study's one command line.

    whypretrain train    --preset P [--set k=v ...]  pre-train, probe, fine-tune, scratch
    whypretrain analyze  --preset P [--set k=v ...]  interactions and knowledge tables
    whypretrain study    --preset P [--set k=v ...]  train, analyze, notebooks, book
    whypretrain book     --preset P [--set k=v ...]  notebooks and book: reads the stored study
    whypretrain assets                               the book's offline JavaScript (npm, once)
    whypretrain presets                              every preset and parameter

Each command resolves its parameters through ``presets.resolve`` first, so a bad preset, key,
type, value or combination of values stops before anything is read, computed or written
(``study`` and ``book`` also resolve the settings the study derives from them). Errors a user can fix (a bad
parameter, a missing data folder, a missing or corrupt weights file, results not computed yet)
print one line that says what to do and exit with status 2; ``--debug`` shows the traceback.
A failing notebook or book build exits with status 1 and names the notebook and cell.

Under torchrun (``torchrun ... -m whypretrain train|analyze|study``, README.md) every process
runs the same command and ``distributed`` shares out the work; only rank 0 prints, and only
rank 0 executes the notebooks and builds the book. A process that fails tells the others, so
they all stop with a non-zero status.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

from whypretrain import distributed, presets
from whypretrain.distributed import say
from whypretrain.errors import ParameterError, UserError

# Modules whose FileNotFoundError / ValueError messages are written for the user (a path to
# fill, a parameter to set); the same exceptions from anywhere else are bugs and keep their
# traceback.
USER_FACING = {"whypretrain.train.data", "whypretrain.train.models",
               "whypretrain.train.runs", "whypretrain.book.build", "whypretrain.layout"}


# ---------------------------------------------------------------------------------------------
# The steps that are more than one library call
# ---------------------------------------------------------------------------------------------
def _resolve_study(preset: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``presets.resolve``, and the settings the study derives from the result (its
    sensitivity grid and transfer settings, which ``study`` computes and the book reads): one
    that is not valid stops here, not after the training."""
    from whypretrain.study.pipeline import DISJOINT, sensitivity_settings, transfer_settings

    params = presets.resolve(preset, overrides)
    derived = [("the sensitivity grid around these parameters", sensitivity_settings),
               (f"the transfer settings (disjoint: these parameters with "
                f"{', '.join(f'{k}={v}' for k, v in DISJOINT.items())}; far: an ImageNet "
                f"preset)", transfer_settings)]
    for what, settings in derived:
        try:
            list(settings(params))
        except ParameterError as err:
            raise ParameterError(f"the study cannot run: {what} holds a setting that is not "
                                 f"valid: {err} (`whypretrain analyze` runs the preset alone)"
                                 ) from None
    return params


def _join(params: dict[str, Any]) -> None:
    """Join torchrun's process group, if torchrun started this process (else nothing)."""
    from whypretrain.train.loops import device_of

    distributed.init(device_of(params))


def train(params: dict[str, Any]) -> None:
    """The training step: every run of every seed (reuses finished runs)."""
    from whypretrain.train.loops import train_study

    _join(params)
    train_study(params)


def analyze(params: dict[str, Any]) -> None:
    """The analysis step: interactions and knowledge tables of every seed of the preset
    (reuses results)."""
    from whypretrain.study.pipeline import compute

    _join(params)
    compute(params)


def analyze_all(params: dict[str, Any]) -> None:
    """Everything the book reads: the preset's results, its sensitivity experiment, the near,
    disjoint and far transfer settings (reuses results), and the findings derived from them."""
    from whypretrain.report.parts import store
    from whypretrain.study.pipeline import compute_all

    _join(params)
    compute_all(params)
    if distributed.is_main():
        store(params)


def book(preset: str = "default", overrides: Mapping[str, Any] | None = None,
         root: str | Path | None = None, force: bool = False) -> int:
    """Execute the notebooks (those whose inputs changed, or all with ``force``) and build the
    book; returns 0 when the book is new, 1 when a notebook or the build failed (the previous
    book stays). Reads only: a part of the study result that is missing stops it before
    anything is written (``MissingResults``, naming ``whypretrain study``)."""
    from whypretrain.book.build import BuildError, build_book
    from whypretrain.layout import find_root
    from whypretrain.book.execute import NotebookError, execute_notebooks
    from whypretrain.study.pipeline import read

    params = _resolve_study(preset, overrides)
    root = find_root(root, fallback=root is None)  # an explicit --root is taken as given
    read(params).require()
    try:
        execute_notebooks(root, preset, overrides, force=force)
        out = build_book(root)
    except (NotebookError, BuildError) as err:
        print(f"whypretrain: {err}", file=sys.stderr, flush=True)
        return 1
    say(f"\nthe book is ready: open {out / 'index.html'}\n"
         f"  (or serve it: python -m http.server -d {out} and open http://127.0.0.1:8000)")
    return 0


def study(preset: str = "default", overrides: Mapping[str, Any] | None = None,
          root: str | Path | None = None) -> int:
    """The whole study: train, analyze, execute every notebook, build the book. Each step
    reuses what is already on disk."""
    params = _resolve_study(preset, overrides)
    say(f"== training ({preset}) ==")
    train(params)
    say(f"== analysis ({preset}) ==")
    analyze_all(params)
    if not distributed.is_main():
        return 0  # rank 0 alone executes the notebooks and builds the book
    say("== notebooks and book ==")
    return book(preset, overrides, root)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whypretrain",
        description="Re-executable study of why pre-training helps downstream classification.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="parameters (set with --set key=value):\n" + presets.describe(),
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    # --debug after the command too; SUPPRESS so an absent one keeps the top-level value
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error instead of one line")
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", default=None,
                      help="the repository (the folder with _toc.yml; default: the one above "
                           "the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "train": "pre-train, linear probe, fine-tune and train from scratch (reuses finished runs)",
        "analyze": "interactions and knowledge of the trained models (reuses finished results)",
        "study": "train, analyze, execute every notebook and build the book",
        "book": "execute the notebooks whose inputs changed and build the book (reads the "
                "stored study; computes nothing)",
    }
    for name, text in helps.items():
        parents = [debug, root] if name in ("study", "book") else [debug]
        cmd = sub.add_parser(name, help=text, description=text, parents=parents)
        cmd.add_argument("--preset", default="default",
                         help=f"one of {sorted(presets.PRESETS)} (default: default)")
        cmd.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                         help="override one parameter; repeatable")
        if name == "book":
            cmd.add_argument("--force", action="store_true",
                             help="execute every notebook, even those up to date")
    sub.add_parser("assets", parents=[debug, root],
                   help="fetch the book's offline JavaScript from npm (once; make setup runs it)")
    sub.add_parser("presets", parents=[debug], help="list presets and parameters")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "presets":
        for name, values in presets.PRESETS.items():
            say(f"{name}: {values or '(the defaults)'}")
        say("\nparameters:\n" + presets.describe())
        return 0
    if args.command == "assets":
        from whypretrain.book.assets import ensure_assets
        from whypretrain.layout import find_root

        ensure_assets(find_root(args.root, fallback=args.root is None))
        return 0
    overrides = presets.parse_sets(args.sets)
    if args.command == "study":
        return study(args.preset, overrides, args.root)
    if args.command == "book":
        if not distributed.is_main():
            return 0  # under torchrun, rank 0 alone executes the notebooks and builds the book
        return book(args.preset, overrides, args.root, force=args.force)
    params = presets.resolve(args.preset, overrides)
    {"train": train, "analyze": analyze}[args.command](params)
    return 0


def _raised_in(err: BaseException) -> str:
    """The module of the innermost frame that raised ``err``."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""


def user_fixable(err: BaseException) -> bool:
    """A ``UserError``, or a ``FileNotFoundError`` / ``ValueError`` whose message the library
    wrote for the user (raised in one of ``USER_FACING``)."""
    return isinstance(err, UserError) or (
        isinstance(err, (FileNotFoundError, ValueError)) and _raised_in(err) in USER_FACING)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as err:
        message = " ".join(str(err).split())  # one line, whatever the message's layout
        distributed.fail(f"{type(err).__name__}: {message}")  # the other ranks stop too
        if args.debug or not user_fixable(err):
            raise
        print(f"whypretrain {args.command}: {message}", file=sys.stderr, flush=True)
        return 2
    finally:
        distributed.finish()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
