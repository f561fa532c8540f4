"""The ``mvbook`` command line: ``mvbook report``, ``studio``, ``data``, ``zoo``, ``assign``.

Run as ``mvbook ...`` (the installed script) or ``python -m mvbook ...``.

Each subcommand lives in the module that owns it and registers itself through an
``add_parser(subparsers)`` function that sets ``func`` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it adds); a module that cannot be imported is reported, not hidden.
SUBCOMMAND_MODULES = (
    "mvbook.report.cli",
    "mvbook.studio.cli",
    "mvbook.data.cli",
    "mvbook.zoo.cli",
    "mvbook.assign",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that part of the book is not installed in this checkout
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
