"""Learning-rate schedules, as factors of the base rate per step (for ``LambdaLR``).

:func:`warmup_cosine`: a linear warm-up over ``warmup`` steps, then a cosine decay from 1 to
``floor`` at step ``steps`` (and ``floor`` after it).
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(steps: int, warmup: int = 0, floor: float = 0.01) -> Callable[[int], float]:
    """``factor(step)``: ``(step + 1) / warmup`` during the warm-up, then
    ``floor + (1 - floor) (1 + cos(pi t)) / 2`` with ``t = (step - warmup) / (steps - warmup)``
    clipped to ``[0, 1]``."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor
