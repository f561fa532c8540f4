"""The ``mvbook`` command line as a module: ``python -m mvbook`` (no notebook is executed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
