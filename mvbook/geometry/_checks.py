"""Input validation shared by the geometry modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Convert ``value`` (tensor, array, list, number) to a floating tensor.

    Integer inputs are converted to ``dtype`` (or torch's default float dtype). Floating
    tensors keep their dtype unless ``dtype`` is given. Raises ``TypeError`` naming the
    argument when the value cannot be converted.
    """
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value) if not np.isscalar(value) else value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from exc
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.to(dtype or torch.get_default_dtype())
    elif dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device is not None and tensor.device != device:
        tensor = tensor.to(device)
    return tensor


def check_last_dims(tensor: torch.Tensor, name: str, dims: tuple[int, ...], pattern: str) -> None:
    """Raise ``ValueError`` unless ``tensor.shape`` ends with ``dims`` (``-1`` = any size)."""
    n = len(dims)
    shape = tuple(tensor.shape)
    ok = len(shape) >= n and all(d == -1 or s == d for s, d in zip(shape[len(shape) - n :], dims))
    if not ok:
        raise ValueError(f"{name} must have shape {pattern}, got {shape}")


def broadcast_batch(shapes: dict[str, tuple[int, ...]]) -> torch.Size:
    """Broadcast named batch shapes; raise ``ValueError`` naming the arguments on mismatch."""
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError as exc:
        desc = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"batch shapes do not broadcast: {desc}") from exc


def common_float_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The promoted floating dtype of the given tensors (``None`` entries skipped)."""
    dtype: torch.dtype | None = None
    for tensor in tensors:
        if tensor is None:
            continue
        dtype = tensor.dtype if dtype is None else torch.promote_types(dtype, tensor.dtype)
    return dtype or torch.get_default_dtype()


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
