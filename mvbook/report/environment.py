"""Describe the machine and checkout a computation ran on: git, Python, packages, CPU and GPU.

:func:`capture_environment` gathers everything in one JSON-ready dict; ``mvbook report`` stores
it in each run's ``environment.json`` so that a number in the book can be traced to the code
and the hardware that produced it. Nothing here changes state: git is queried with read-only
commands (``--no-optional-locks``), and a missing git, package or GPU is reported as ``None``
or an empty list, never as an error.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KEY_PACKAGES = (
    "mvbook",
    "torch",
    "numpy",
    "scipy",
    "matplotlib",
    "plotly",
    "ipywidgets",
    "tqdm",
    "papermill",
    "nbclient",
    "nbconvert",
    "nbformat",
    "ipykernel",
    "nbval",
    "pyyaml",
    "pybullet",
    "opencv-python-headless",
    "kornia",
    "pillow",
)


def _run_git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_info(path: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding ``path``
    (read-only git commands)."""
    commit = _run_git(["rev-parse", "HEAD"], path)
    status = _run_git(["status", "--porcelain"], path)
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """Names of the CUDA devices torch sees (``[]`` without a usable GPU)."""
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA setup is reported as "no GPU"
        pass
    return []


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def capture_environment(root: Path) -> dict[str, Any]:
    """Git state of the checkout holding ``root``, Python, packages, platform, CPU and GPU."""
    return {
        "git": git_info(root),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
        "packages": package_versions(),
    }


__all__ = [
    "KEY_PACKAGES",
    "capture_environment",
    "cpu_name",
    "git_info",
    "gpu_names",
    "package_versions",
]
