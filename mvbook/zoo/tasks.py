"""Which module implements each zoo model's task (data, network, loss, metrics).

Every task module provides ``person_crops(dataset, recipe, progress=...)`` (a bank with a
``cat`` static method), ``build_model(recipe)``, ``make_loss(recipe)`` and
``evaluate(model, bank) -> dict[str, float]``; :mod:`mvbook.zoo.training` and
:func:`mvbook.zoo.load` go through :func:`task` only.
"""

from __future__ import annotations

from types import ModuleType

from . import dense, pose2d
from .recipes import MODELS

__all__ = ["task"]

_TASKS = {"pose2d": pose2d, "dense0": dense, "trunk": dense}
assert set(_TASKS) == set(MODELS), "every zoo model needs a task module"


def task(name: str) -> ModuleType:
    """The task module of zoo model ``name`` (:data:`mvbook.zoo.recipes.MODELS`)."""
    if name not in _TASKS:
        raise ValueError(f"name must be one of the zoo's models {MODELS}, got {name!r}")
    return _TASKS[name]
