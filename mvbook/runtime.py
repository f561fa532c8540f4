"""Runtime helpers shared by every chapter: profiles, devices and seeding.

The book runs in three profiles (see DESIGN.md):

- ``"smoke"``: seconds per chapter, tiny sizes; proves a notebook runs end to end (tests).
- ``"quick"``: a 2-core CPU, minutes per chapter, shows each paper's main effect (report).
- ``"full"``: GPUs and real datasets, the papers' scale.
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "quick", "full")
PROFILE_ENV = "MVBOOK_PROFILE"
T = TypeVar("T")


def default_profile(fallback: str = "quick") -> str:
    """The profile a notebook's parameters cell starts from.

    Reads the environment variable ``MVBOOK_PROFILE`` (the test command sets it to
    ``"smoke"``) so that a profile is selected without editing the notebook; papermill
    parameters still override it.
    """
    profile = os.environ.get(PROFILE_ENV, fallback)
    return check_profile(profile)


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise ``ValueError``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def by_profile(profile: str, *, smoke: T, quick: T, full: T) -> T:
    """Pick the value for ``profile``: ``by_profile(p, smoke=2, quick=200, full=20000)``."""
    return {"smoke": smoke, "quick": quick, "full": full}[check_profile(profile)]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; validate anything else.

    Never hard-code ``.cuda()``: every chapter passes its ``device`` parameter through here.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a seeded ``torch.Generator``.

    The one seeding helper of the book: the same seed and profile give the same metrics on
    the same machine. With ``deterministic=True`` torch is asked for deterministic kernels
    where they exist (``warn_only`` so that ops without one still run).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - the legacy global stream is what users call
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
