"""Timing shared by the benchmark scripts: run them as ``python bench/<script>.py`` (this folder
is then on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def mean_seconds(fn: Callable[[], object], steps: int, device: torch.device,
                 warmup: int = 2) -> float:
    """Mean wall seconds of ``fn()`` over ``steps`` calls after ``warmup`` calls, waiting for
    CUDA to finish before each clock reading."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps
