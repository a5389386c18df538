"""The ``whypretrain`` command, the study's one command line.

    whypretrain train    --preset P [--set k=v ...]  pre-train, probe, fine-tune, scratch
    whypretrain analyze  --preset P [--set k=v ...]  interactions and knowledge tables
    whypretrain study    --preset P [--set k=v ...]  train, analyze, notebooks, book
    whypretrain book     --preset P [--set k=v ...]  notebooks and book: reads the stored study
    whypretrain assets                               the book's offline JavaScript (npm, once)
    whypretrain presets                              every preset and parameter
    whypretrain verify   [--set workdir=W] [--repair] every stored file against its record

Each command that computes first creates its workdir and writes a file there: a workdir that
cannot be created or written stops at once with one line (exit status 2).

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
         root: str | Path | None = None, force: bool = False, check_study: bool = True) -> int:
    """Execute the notebooks (those whose inputs changed, or all with ``force``) and build the
    book; returns 0 when the book is new, 1 when a notebook or the build failed (the previous
    book stays). Reads only: a part of the study result that is missing stops it before
    anything is written (``MissingResults``, naming ``whypretrain study``); ``check_study=False``
    for a book whose notebooks read no study (the runner's own tests)."""
    from whypretrain.book.build import BuildError, build_book
    from whypretrain.layout import find_root
    from whypretrain.book.execute import NotebookError, execute_notebooks
    from whypretrain.study.pipeline import read

    params = _resolve_study(preset, overrides)
    root = find_root(root, fallback=root is None)  # an explicit --root is taken as given
    if check_study:
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


def verify(workdir: str | Path, repair: bool = False) -> int:
    """Check every stored file of ``workdir`` against its folder's record (``integrity``): one
    line per damaged file on stderr, naming the command that remakes it. Returns 0 when all are
    as recorded, 2 when some are not; with ``repair``, removes the damaged files (all of a run
    with one: it is trained again) so that the command that made them computes them again,
    and returns 0."""
    from whypretrain import integrity

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserError(f"the workdir {workdir} does not exist: nothing to verify")
    folders = integrity.folders(workdir)
    checked = sum(len(integrity.records(f) or ()) for f in folders)
    found = [p for f in folders for p in integrity.problems(f)]
    remake = _remaking_commands(workdir)
    for problem in found:
        print(f"damaged: {problem.path} ({problem.why}); remade by "
              f"{_remade_by(problem.path, workdir, remake)}", file=sys.stderr, flush=True)
    old = integrity.unrecorded(workdir)
    if old:
        say(f"{len(old)} folders hold files written before records existed: not checked")
    if not found:
        say(f"verified {checked} files in {len(folders)} folders of {workdir}: all as recorded")
        return 0
    if not repair:
        print(f"whypretrain verify: {len(found)} of the {checked} recorded files in {workdir} "
              "are damaged; `whypretrain verify --repair` removes them, and the commands above "
              "compute them again", file=sys.stderr, flush=True)
        return 2
    for problem in found:
        _repair(problem, workdir)
    say(f"removed {len(found)} damaged files; the commands above compute them again")
    return 0


def _repair(problem, workdir: Path) -> None:
    """Remove a damaged file: all of its run's files (a run is trained again from its start),
    all of its folder's when the folder's manifest cannot be read, else the file."""
    from whypretrain import integrity

    folder = problem.path.parent
    if folder.parent == workdir / "runs":
        integrity.clear(folder, keep=("params.json",))
    elif integrity.records(folder) is None:
        integrity.clear(folder)
    else:
        integrity.remove(problem.path)


def _remaking_commands(workdir: Path) -> dict[str, str]:
    """Results folder, run or study hash -> the command that made it, from the studies'
    manifests (their parts' sources), with this workdir (a workdir may have moved)."""
    import json

    from whypretrain import integrity
    from whypretrain.provenance import command, portable

    out: dict[str, str] = {}
    for manifest in sorted((workdir / "studies").glob("*/study.json")):
        try:
            study = json.loads(integrity.read_bytes(manifest))
            params = {k: tuple(v) if isinstance(v, list) else v  # JSON made tuples lists
                      for k, v in study["params"].items()}
            here = (f"workdir={portable(str(params['workdir']))}",
                    f"workdir={portable(str(workdir.absolute()))}")
            out[manifest.parent.name] = command("study", {**params, "workdir": str(workdir)})
        except (ValueError, KeyError, TypeError):
            continue
        for entry in study.get("parts", {}).values():
            sources = entry.get("sources", {})
            made_by = (sources.get("commands") or [out[manifest.parent.name]])[0]
            for name in (*sources.get("results", ()), *sources.get("runs", ())):
                out.setdefault(name, made_by.replace(*here))
    return out


def _remade_by(path: Path, workdir: Path, remake: dict[str, str]) -> str:
    parts = path.relative_to(workdir).parts
    top, name = (parts[0], parts[1]) if len(parts) > 2 else ("", "")
    if name in remake:
        return f"`{remake[name]}`"
    verb = {"runs": "train", "results": "analyze", "studies": "study"}.get(top)
    if verb is None:
        return "the command that wrote it"
    return f"`whypretrain {verb}` with the parameters that made it (its folder's params.json)"


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
    text = "check every stored file of the workdir against the size and sha256 recorded for it"
    cmd = sub.add_parser("verify", parents=[debug], help=text, description=text)
    cmd.add_argument("--preset", default="default", help="the preset whose workdir to check")
    cmd.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override one parameter (workdir=PATH); repeatable")
    cmd.add_argument("--repair", action="store_true",
                     help="remove the damaged files, so that the next command computes them")
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
    if args.command == "verify":
        return verify(presets.resolve(args.preset, overrides)["workdir"], args.repair)
    from whypretrain import integrity
    # parameters first (a bad one stops before anything is written), then the workdir
    params = (_resolve_study if args.command in ("study", "book") else presets.resolve)(
        args.preset, overrides)
    integrity.ensure_writable(params["workdir"])
    if args.command == "study":
        return study(args.preset, overrides, args.root)
    if args.command == "book":
        if not distributed.is_main():
            return 0  # under torchrun, rank 0 alone executes the notebooks and builds the book
        return book(args.preset, overrides, args.root, force=args.force)
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
