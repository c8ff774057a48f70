"""The command line: a thin shell over the library.

Each sub-command lives in its own small module of this package with a
``register(subparsers)`` function that adds its parser and sets ``func``.
Heavy imports (torch, pandas) happen inside the command functions, so
``python -m study --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from study.errors import StudyError

# Order is the order shown by --help.
COMMAND_MODULES = (
    "study.cli.run",
    "study.cli.sbatch",
    "study.cli.status",
    "study.cli.verify",
    "study.cli.variants",
    "study.cli.data",
    "study.cli.train",
    "study.cli.report",
    "study.cli.tune",
    "study.cli.complexity",
    "study.cli.bench",
    "study.cli.doctor",
    "study.cli.env",
    "study.cli.init",
)


class StudyParser(argparse.ArgumentParser):
    """argparse, with a guess for a misspelt command or choice: `rn` -> did you mean 'run'?"""

    def error(self, message: str):
        import re

        from study.errors import did_you_mean

        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
            message = (f"unknown {'command' if 'COMMAND' in message else 'choice'} {found.group(1)!r}"
                       f"{did_you_mean(found.group(1), choices)}; expected one of: {', '.join(choices)}")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    import study

    parser = StudyParser(
        prog="python -m study",
        description="Rebuild the UltraLBM-UNet paper's tables from your own runs.",
    )
    parser.add_argument("--version", action="version", version=f"ultralbm-study {study.__version__}")
    parser.add_argument("--study", metavar="DIR", default=None,
                        help="a lab's own study folder (made by `init`): its tables and cluster profiles join the "
                             "paper's, and its results/ is the default store (or set STUDY_DIR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=StudyParser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command module not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        if args.study:
            from study.settings import use_own_study

            use_own_study(args.study)
        return int(args.func(args) or 0)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
