"""Input checks shared by every public function of mvbook: one vocabulary, one message style.

This is the bottom layer of the package: it imports only numpy and torch. Every check names the
argument, says what was expected and what it got, e.g.
``joints3d must have shape (..., J, 3), got (4, 17, 2)``. Wrong types raise ``TypeError``, bad
values and shapes ``ValueError``.

Shape patterns follow kornia's notation: a parenthesised, comma-separated list of dimensions,
where ``*`` or ``...`` stands for any number (zero or more) of dimensions, an integer for a
dimension of exactly that size and a name (``J``, ``C``, ``H``) for a dimension of any size that
must agree wherever the name recurs in the pattern (and with ``sizes`` when given). Text after
the closing parenthesis is an annotation printed in the message only:
``"(..., 5) = (k1, k2, p1, p2, k3)"``.

Functions:

- :func:`as_float_tensor` -- tensor, array, list or number to a floating tensor (``TypeError``).
- :func:`check_tensor` -- is a ``torch.Tensor``, optionally floating point or of one dtype.
- :func:`check_shape` -- the shape matches a pattern such as ``"(*, J, 3)"``; returns the sizes
  of the named dimensions.
- :func:`check_same_shape` -- two tensors have the same shape (or the same last dimensions).
- :func:`check_finite` -- no NaN or infinite values.
- :func:`check_index` -- an integer index into a dimension of a given size.
- :func:`check_positive` -- a positive (or non-negative) number, integer or tensor of them.
- :func:`check_choice` -- one of a fixed set of options.
- :func:`broadcast_batch` -- broadcast named batch shapes, naming them on mismatch.
- :func:`common_float_dtype` -- the promoted floating dtype of several tensors.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "as_float_tensor",
    "broadcast_batch",
    "check_choice",
    "check_finite",
    "check_index",
    "check_positive",
    "check_same_shape",
    "check_shape",
    "check_tensor",
    "common_float_dtype",
]


def as_float_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert ``value`` (tensor, array, list, number) to a floating tensor.

    Integer inputs become ``dtype`` (or torch's default float dtype). Floating tensors keep their
    dtype unless ``dtype`` is given. Raises ``TypeError`` naming the argument when the value is
    not numeric, or holds booleans or complex numbers.
    """
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value) if not np.isscalar(value) else value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{name} must be a tensor or array of numbers, got {type(value).__name__}"
            ) from exc
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.to(dtype or torch.get_default_dtype())
    elif dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device is not None and tensor.device != torch.device(device):
        tensor = tensor.to(device)
    return tensor


def check_tensor(
    x: Any, name: str, *, floating: bool = False, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Return ``x`` if it is a ``torch.Tensor``, else raise ``TypeError`` naming ``name``.

    ``floating=True`` also requires a floating-point dtype; ``dtype`` requires exactly that dtype
    (e.g. ``torch.bool`` for masks). Nothing is converted.
    """
    if not isinstance(x, torch.Tensor):
        expected = "a torch.Tensor" if dtype is None else f"a torch.Tensor of dtype {dtype}"
        raise TypeError(f"{name} must be {expected}, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {x.dtype}")
    return x


_ELLIPSIS = ("*", "...")


@functools.lru_cache(maxsize=256)
def _parse_pattern(pattern: str) -> tuple[tuple[str | int, ...], int | None]:
    """``"(..., J, 3) note"`` -> (("J", 3) without the ellipsis, position of the ellipsis)."""
    text = pattern.strip()
    if not text.startswith("(") or ")" not in text:
        raise ValueError(f"shape pattern must look like '(*, J, 3)', got {pattern!r}")
    body = text[1 : text.index(")")].strip()
    if body.endswith(","):  # a one-tuple, "(N,)"
        body = body[:-1]
    tokens: list[str | int] = []
    ellipsis: int | None = None
    for raw in body.split(","):
        tok = raw.strip()
        if not tok:
            if body:
                raise ValueError(f"empty dimension in shape pattern {pattern!r}")
            continue
        if tok in _ELLIPSIS:
            if ellipsis is not None:
                raise ValueError(f"shape pattern {pattern!r} has more than one '*' or '...'")
            ellipsis = len(tokens)
        elif tok.isdigit():
            tokens.append(int(tok))
        elif tok.isidentifier():
            tokens.append(tok)
        else:
            raise ValueError(f"bad dimension {tok!r} in shape pattern {pattern!r}")
    return tuple(tokens), ellipsis


def check_shape(
    x: Any, name: str, pattern: str, sizes: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Check ``x.shape`` against a kornia-like ``pattern``; return the named dimensions' sizes.

    Args:
        x: a ``torch.Tensor`` (anything else raises ``TypeError``).
        name: the argument's name, used in the message.
        pattern: e.g. ``"(*, J, 3)"``, ``"(..., 3, 4)"``, ``"(F, Np, 14, 3)"``, ``"(B, C)"``.
            ``*``/``...`` matches zero or more dimensions; integers match exactly; a name
            matches any size, the same wherever it recurs. Text after ``)`` is shown as is.
        sizes: required sizes of some named dimensions, e.g. ``{"J": 17}`` (names that do not
            occur in the pattern are ignored, so the result of one call can feed the next).

    Returns:
        ``{dimension name: size}`` for the names in the pattern.

    Raises:
        ValueError: ``"{name} must have shape {pattern}[ with J = 17], got (4, 17, 2)"``.
    """
    check_tensor(x, name)
    tokens, ellipsis = _parse_pattern(pattern)
    fixed = {k: int(v) for k, v in (sizes or {}).items() if k in tokens}
    shape = tuple(x.shape)
    bound: dict[str, int] = dict(fixed)
    ok = len(shape) >= len(tokens) if ellipsis is not None else len(shape) == len(tokens)
    if ok:
        if ellipsis is None:
            dims = shape
        else:
            tail = len(tokens) - ellipsis
            dims = shape[:ellipsis] + (shape[len(shape) - tail :] if tail else ())
        for tok, size in zip(tokens, dims):
            if isinstance(tok, int):
                ok = size == tok
            else:
                ok = bound.setdefault(tok, size) == size
            if not ok:
                break
    if not ok:
        text = pattern.strip()
        cut = text.index(")") + 1
        extra = ", ".join(f"{k} = {v}" for k, v in fixed.items())
        expected = text[:cut] + (f" with {extra}" if extra else "") + text[cut:]
        raise ValueError(f"{name} must have shape {expected}, got {shape}")
    return {k: v for k, v in bound.items() if k in tokens}


def check_same_shape(
    a: Any, b: Any, names: tuple[str, str], *, last: int | None = None
) -> None:
    """Raise ``ValueError`` unless tensors ``a`` and ``b`` have the same shape.

    ``last=n`` compares only the last ``n`` dimensions (both need at least ``n``); the message
    names both arguments and gives both shapes.
    """
    check_tensor(a, names[0])
    check_tensor(b, names[1])
    sa, sb = tuple(a.shape), tuple(b.shape)
    if last is None:
        ok, what = sa == sb, "the same shape"
    else:
        ok = len(sa) >= last and len(sb) >= last and sa[len(sa) - last :] == sb[len(sb) - last :]
        what = f"the same last {last} dimension{'s' if last != 1 else ''}"
    if not ok:
        raise ValueError(f"{names[0]} and {names[1]} must have {what}, got {sa} and {sb}")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values (saying how many)."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be finite, got {int(bad.sum())} NaN or inf value(s) among "
            f"{tensor.numel()} in shape {tuple(tensor.shape)}"
        )


def check_index(value: Any, name: str, size: int, *, negative: bool = True) -> int:
    """An integer index into a dimension of ``size`` entries, returned as ``int``.

    Accepts Python and numpy integers (not bools) in ``[-size, size)``, or ``[0, size)`` with
    ``negative=False``. Raises ``TypeError`` for a non-integer, ``ValueError`` when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    lo = -size if negative else 0
    if not lo <= int(value) < size:
        raise ValueError(f"{name} must be an int in [{lo}, {size}), got {int(value)}")
    return int(value)


def check_positive(
    value: Any, name: str, *, integer: bool = False, strict: bool = True
) -> Any:
    """Return ``value`` if it is a positive number (``> 0``; ``>= 0`` with ``strict=False``).

    ``value`` may be a Python/numpy number or a tensor (every element is checked; NaN fails).
    ``integer=True`` requires a Python/numpy int. Raises ``ValueError`` for anything else --
    including a wrong type, as the callers always have -- naming the argument and the value.
    """
    if strict:
        expected = "a positive int" if integer else "a positive number"
    else:
        expected = "an int >= 0" if integer else "a number >= 0"
    if isinstance(value, torch.Tensor) and not integer:
        ok = value.dtype != torch.bool and not value.is_complex()
        if ok:
            ok = bool((value > 0).all()) if strict else bool((value >= 0).all())
        if not ok:
            shown = value.tolist() if value.numel() <= 16 else f"a tensor of shape {tuple(value.shape)}"
            each = " (every element)" if value.ndim else ""
            raise ValueError(f"{name} must be {expected}{each}, got {shown}")
        return value
    types: tuple[type, ...] = (numbers.Integral,) if integer else (numbers.Real,)
    ok = isinstance(value, types) and not isinstance(value, bool)
    if ok:
        ok = value > 0 if strict else value >= 0
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def broadcast_batch(shapes: Mapping[str, tuple[int, ...] | torch.Size]) -> torch.Size:
    """Broadcast named batch shapes; raise ``ValueError`` naming each argument and its shape."""
    try:
        return torch.broadcast_shapes(*(tuple(s) for s in shapes.values()))
    except RuntimeError as exc:
        desc = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"batch shapes do not broadcast: {desc}") from exc


def common_float_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The promoted floating dtype of the given tensors (``None`` entries skipped).

    With no floating tensor at all the result is torch's default float dtype.
    """
    dtype: torch.dtype | None = None
    for tensor in tensors:
        if tensor is None:
            continue
        dtype = tensor.dtype if dtype is None else torch.promote_types(dtype, tensor.dtype)
    if dtype is None:
        return torch.get_default_dtype()
    return dtype if dtype.is_floating_point else torch.promote_types(dtype, torch.get_default_dtype())
