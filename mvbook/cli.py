"""The ``mvbook`` command line: ``mvbook report``, ``book``, ``studio``, ``data``, ``zoo``, ``assign``.

Run as ``mvbook ...`` (the installed script) or ``python -m mvbook ...``.

Each subcommand lives in the module that owns it and registers itself through an
``add_parser(subparsers)`` function that sets ``func`` on its parser.

Errors are handled here, once for every subcommand (:func:`handle_errors`): an error the user
can fix (a bad option, a missing or damaged file, an unusable device: ``ValueError``,
``OSError`` and the book's own error classes, :data:`USER_ERRORS`) is one line
``mvbook: <message>`` on standard error and exit status 2. Any other exception is a bug in
mvbook: its traceback is printed with a line saying so, exit status 1. Set
``MVBOOK_TRACEBACK=1`` to see the traceback of a user error too.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import traceback
from collections.abc import Callable

# (module, what it adds); a module that cannot be imported is reported, not hidden.
SUBCOMMAND_MODULES = (
    "mvbook.report.cli",
    "mvbook.studio.cli",
    "mvbook.data.cli",
    "mvbook.zoo.cli",
    "mvbook.assign",
    "mvbook.book",
)

#: The errors a user can fix, besides ``ValueError`` and ``OSError`` (which cover
#: ``DatasetFormatError``, ``CheckpointError`` and ``MissingRawDataError``): (module, class).
#: A class is looked up only when its module was imported: one that was not cannot have been
#: raised, and the command line stays fast to start.
USER_ERRORS = (
    ("mvbook.report.options", "ReportError"),
    ("mvbook.zoo.store", "ZooError"),
    ("mvbook.data.download", "DownloadError"),
    ("mvbook.assign", "AssignError"),
    ("mvbook.book", "BookError"),
    ("mvbook.data.spec", "DatasetFormatError"),
    ("mvbook.train", "CheckpointError"),
)
TRACEBACK_ENV = "MVBOOK_TRACEBACK"
USER_ERROR_STATUS = 2
BUG_STATUS = 1


def user_error_classes() -> tuple[type[BaseException], ...]:
    """``ValueError``, ``OSError`` and the classes of :data:`USER_ERRORS` imported so far."""
    found: list[type[BaseException]] = [ValueError, OSError]
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def error_message(err: BaseException) -> str:
    """``err`` as one line: an ``OSError`` from the system as ``<path>: <reason>``, any other
    error as its text with line breaks folded."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        where = str(err.filename)
        if err.filename2 is not None:
            where += f" -> {err.filename2}"
        text = f"{where}: {err.strerror}"
    elif isinstance(err, OSError) and err.strerror and len(err.args) == 2:
        text = err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def handle_errors(func: Callable[[argparse.Namespace], int | None]) -> Callable[..., int]:
    """Wrap a subcommand ``func(args)``: a user error becomes ``mvbook: <message>`` on
    standard error and the return value 2; anything else propagates. Wrapping twice is
    wrapping once."""
    if getattr(func, "handles_errors", False):
        return func  # type: ignore[return-value]

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except user_error_classes() as err:
            if os.environ.get(TRACEBACK_ENV):
                traceback.print_exc()
            print(f"mvbook: {error_message(err)}", file=sys.stderr)
            return USER_ERROR_STATUS

    run.handles_errors = True  # type: ignore[attr-defined]
    return run


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
    """Run ``mvbook`` with ``argv`` (default: the process's arguments); return the exit status
    (argparse exits with 2 itself on a bad command line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return handle_errors(args.func)(args)
    except Exception:  # noqa: BLE001 - a bug: shown in full, and said to be one
        traceback.print_exc()
        print("mvbook: internal error (a bug in mvbook, not in what you asked for): please "
              "report it with the traceback above", file=sys.stderr)
        return BUG_STATUS


if __name__ == "__main__":
    sys.exit(main())
