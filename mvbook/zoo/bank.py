"""In-memory training samples of the zoo's tasks: named tensors with one row per crop."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["TensorBank"]


class TensorBank(torch.utils.data.Dataset):
    """Named tensors with equal first dimensions (one row per sample), a ``Dataset`` of dicts.

    Subclasses name their required tensors in ``KEYS``; a missing one or a length that differs
    from ``images`` is refused.
    """

    KEYS: tuple[str, ...] = ("images",)

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        name = type(self).__name__
        missing = [k for k in self.KEYS if k not in tensors]
        if missing:
            raise ValueError(f"{name} needs tensors {self.KEYS}, missing {missing}")
        n = len(tensors[self.KEYS[0]])
        bad = {k: len(v) for k, v in tensors.items() if len(v) != n}
        if bad:
            raise ValueError(f"tensors {bad} do not have {n} rows like {self.KEYS[0]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[self.KEYS[0]])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    @classmethod
    def cat(cls, banks: Iterable[TensorBank]):
        """One bank holding the rows of ``banks`` in order (the ``KEYS`` tensors)."""
        banks = list(banks)
        return cls({k: torch.cat([b.tensors[k] for b in banks]) for k in cls.KEYS})
