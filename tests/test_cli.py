"""The ``mvbook`` command line as a module: ``python -m mvbook`` (no notebook is executed)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def python_m_mvbook(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mvbook", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_python_m_mvbook_help_lists_the_report_command():
    proc = python_m_mvbook("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: mvbook" in proc.stdout
    assert "report" in proc.stdout


def test_python_m_mvbook_report_help_lists_its_options():
    proc = python_m_mvbook("report", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--profile", "--only", "--out", "-p KEY=VALUE", "--resume", "--verify"):
        assert option in proc.stdout, option
    assert "rtol" in proc.stdout and "environment.json" in proc.stdout


# -- one error handler for every subcommand --------------------------------------------------


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mvbook: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def test_a_user_error_is_one_line_and_exit_status_2(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = python_m_mvbook("data", "check", str(afile))
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr, str(afile), "is a file")


def _fail_with(monkeypatch, exc: BaseException) -> None:
    from mvbook.studio import cli as studio_cli

    def info(args):
        raise exc

    monkeypatch.setattr(studio_cli, "_info", info)


@pytest.mark.parametrize(
    ("exc", "needles"),
    [
        (ValueError("seed must be >= 0,\n  got -1"), ["seed must be >= 0, got -1"]),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"),
         ["/mnt/ro/run: Read-only file system"]),
        (PermissionError(errno.EACCES, "Permission denied"), ["mvbook: Permission denied"]),
        (FileExistsError("out exists; choose another"), ["out exists; choose another"]),
    ],
    ids=["ValueError", "OSError", "OSError-no-path", "FileExistsError"],
)
def test_central_handler_formats_user_errors(monkeypatch, capsys, exc, needles):
    from mvbook import cli

    _fail_with(monkeypatch, exc)
    assert cli.main(["studio", "info"]) == 2
    _one_line(capsys.readouterr().err, *needles)


def test_the_books_error_classes_are_user_errors(monkeypatch, capsys):
    from mvbook import cli
    from mvbook.assign import AssignError
    from mvbook.data.download import DownloadError
    from mvbook.data.spec import DatasetFormatError
    from mvbook.report.options import ReportError
    from mvbook.train import CheckpointError
    from mvbook.zoo.store import ZooError

    for cls in (ReportError, ZooError, DownloadError, AssignError, DatasetFormatError,
                CheckpointError):
        _fail_with(monkeypatch, cls(f"a {cls.__name__}"))
        assert cli.main(["studio", "info"]) == 2, cls
        _one_line(capsys.readouterr().err, f"mvbook: a {cls.__name__}")


def test_a_bug_keeps_its_traceback_and_says_so(monkeypatch, capsys):
    from mvbook import cli

    _fail_with(monkeypatch, KeyError("oops"))
    assert cli.main(["studio", "info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err
    assert err.strip().splitlines()[-1].startswith("mvbook: internal error (a bug in mvbook")


def test_traceback_of_a_user_error_on_request(monkeypatch, capsys):
    from mvbook import cli

    _fail_with(monkeypatch, ValueError("bad"))
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    assert cli.main(["studio", "info"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "mvbook: bad"


def test_handle_errors_wraps_once():
    from mvbook.cli import handle_errors

    def func(args):
        raise ValueError("x")

    once = handle_errors(func)
    assert handle_errors(once) is once
    assert once(None) == 2


def test_data_scripts_errors_are_one_line(tmp_path, capsys):
    from mvbook.data.cli import main_for_dataset

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main_for_dataset("shelf", ["convert", "--raw", str(tmp_path), "--out",
                                      str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("data_scripts/shelf.py: ") and "is a file" in err
    assert len(err.strip().splitlines()) == 1
