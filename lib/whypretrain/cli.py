"""The ``whypretrain`` command: ``train``, ``analyze``, ``study`` and ``presets``.

Each sub-command resolves its parameters through ``presets.resolve`` first, so a bad preset,
key, type or value stops with a message before anything is computed or written.
"""
from __future__ import annotations

import argparse
import sys

from . import presets


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whypretrain",
        description="Re-executable study of why pre-training helps downstream classification.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="parameters (set with --set key=value):\n" + presets.describe(),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "train": "pre-train, linear probe, fine-tune and train from scratch (reuses finished runs)",
        "analyze": "interactions and knowledge of the trained models (reuses finished results)",
        "study": "train, analyze, execute every notebook and build the book",
    }
    for name, text in helps.items():
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--preset", default="default",
                         help=f"one of {sorted(presets.PRESETS)} (default: default)")
        cmd.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                         help="override one parameter; repeatable")
    sub.add_parser("presets", help="list presets and parameters")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "presets":
        for name, values in presets.PRESETS.items():
            print(f"{name}: {values or '(the defaults)'}")
        print("\nparameters:\n" + presets.describe())
        return 0
    try:
        overrides = presets.parse_sets(args.sets)
        params = presets.resolve(args.preset, overrides)
    except ValueError as err:
        print(f"whypretrain {args.command}: {err}", file=sys.stderr)
        return 2
    if args.command == "train":
        from .training import train_study
        train_study(params)
    elif args.command == "analyze":
        from .study import compute
        compute(params)
    elif args.command == "study":
        from .runner import study
        return study(args.preset, overrides)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
