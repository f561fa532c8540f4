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


DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or a torch.device"


def parse_device(device: str | torch.device, name: str = "device") -> torch.device | str:
    """Check the *form* of a device argument, not whether the machine has it: ``"auto"`` is
    returned as is, a device name as its ``torch.device``.

    Raises ``TypeError`` for a value that is neither a str nor a ``torch.device`` and a one-line
    ``ValueError`` naming ``name`` and the accepted forms (:data:`DEVICE_FORMS`) for a string
    torch does not know (``"gpu"``, ``"cuda:x"``).
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a str or torch.device, got {type(device).__name__}")
    if device == "auto":
        return device
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"{name}={device!r} is not a device: expected {DEVICE_FORMS}") from None


def resolve_device(device: str | torch.device = "auto", name: str = "device") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; validate anything else.

    Accepted: :data:`DEVICE_FORMS` (any other device string torch knows, e.g. ``"meta"``,
    is passed through). A string torch does not know raises a one-line ``ValueError`` naming
    the argument ``name`` and the accepted forms, as does a CUDA device on a machine without
    CUDA, or a GPU index the machine does not have (both also for a ``torch.device``); a value
    that is neither a str nor a ``torch.device`` raises ``TypeError``.

    Never hard-code ``.cuda()``: every chapter passes its ``device`` parameter through here.
    """
    dev = parse_device(device, name)
    if dev == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(dev, torch.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r} was requested but CUDA is not available "
                             "on this machine; use 'auto' or 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name}={str(device)!r}: this machine has {count} CUDA "
                             f"device{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={str(device)!r} was requested but MPS is not available on "
                         "this machine; use 'auto' or 'cpu'")
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
