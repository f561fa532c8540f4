"""Tests of mvbook.validation: each check accepts a right input and, on a wrong one, raises the
documented exception with a message naming the argument, what was expected and what it got."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mvbook.validation import (
    as_float_tensor,
    broadcast_batch,
    check_choice,
    check_finite,
    check_index,
    check_positive,
    check_same_shape,
    check_shape,
    check_tensor,
    common_float_dtype,
)


def _raises(exc: type[Exception], *parts: str):
    """pytest.raises matching every literal ``part`` of the message, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(p) for p in parts))


# --------------------------------------------------------------------------------------------
# as_float_tensor
# --------------------------------------------------------------------------------------------
def test_as_float_tensor_converts_and_keeps_floating_dtypes():
    assert as_float_tensor([1, 2], "x").dtype == torch.get_default_dtype()
    assert as_float_tensor(np.arange(3), "x", dtype=torch.float64).dtype == torch.float64
    half = torch.zeros(2, dtype=torch.float16)
    assert as_float_tensor(half, "x") is half
    assert as_float_tensor(3, "x").shape == ()


def test_as_float_tensor_names_the_argument():
    with _raises(TypeError, "points must be a tensor or array of numbers", "got str"):
        as_float_tensor("abc", "points")
    with _raises(TypeError, "mask must hold real numbers", "torch.bool"):
        as_float_tensor(torch.ones(2, dtype=torch.bool), "mask")
    with _raises(TypeError, "z must hold real numbers", "complex"):
        as_float_tensor(torch.ones(2, dtype=torch.complex64), "z")


# --------------------------------------------------------------------------------------------
# check_tensor
# --------------------------------------------------------------------------------------------
def test_check_tensor_accepts_and_returns_the_tensor():
    x = torch.zeros(2, dtype=torch.int64)
    assert check_tensor(x, "x") is x
    assert check_tensor(torch.zeros(2), "x", floating=True).dtype == torch.float32
    assert check_tensor(torch.zeros(2, dtype=torch.bool), "m", dtype=torch.bool).dtype == torch.bool


def test_check_tensor_wrong_type_or_dtype():
    with _raises(TypeError, "heatmaps must be a torch.Tensor", "got ndarray"):
        check_tensor(np.zeros(3), "heatmaps")
    with _raises(TypeError, "points must be a floating-point tensor", "torch.int64"):
        check_tensor(torch.zeros(3, dtype=torch.int64), "points", floating=True)
    with _raises(TypeError, "mask must have dtype torch.bool", "torch.float32"):
        check_tensor(torch.zeros(3), "mask", dtype=torch.bool)
    with _raises(TypeError, "mask must be a torch.Tensor of dtype torch.bool", "got list"):
        check_tensor([True], "mask", dtype=torch.bool)


# --------------------------------------------------------------------------------------------
# check_shape
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "pattern", "named"),
    [
        ((4, 17, 3), "(*, J, 3)", {"J": 17}),
        ((17, 3), "(..., J, 3)", {"J": 17}),  # the ellipsis matches zero dimensions
        ((2, 5, 3, 4), "(..., C, 3, 4)", {"C": 5}),
        ((6, 2, 14, 3), "(F, Np, 14, 3)", {"F": 6, "Np": 2}),
        ((3,), "(N,)", {"N": 3}),
        ((2, 8, 8, 8, 3), "(..., D, D, D, 3)", {"D": 8}),  # a repeated name agrees
        ((2, 5), "(B, ...)", {"B": 2}),
        ((), "(...)", {}),
    ],
)
def test_check_shape_accepts_matching_shapes(shape, pattern, named):
    assert check_shape(torch.zeros(shape), "x", pattern) == named


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ((4, 17, 2), "(..., J, 3)"),  # wrong fixed size
        ((3,), "(..., J, 3)"),  # too few dimensions
        ((3, 4), "(C, 3, 4)"),  # too few for a pattern without ellipsis
        ((1, 2, 3, 4), "(C, 3, 4)"),  # too many
        ((2, 8, 8, 7, 3), "(..., D, D, D, 3)"),  # a repeated name disagrees
    ],
)
def test_check_shape_rejects_and_names_argument_pattern_and_shape(shape, pattern):
    with _raises(ValueError, f"joints3d must have shape {pattern}", f"got {shape}"):
        check_shape(torch.zeros(shape), "joints3d", pattern)


def test_check_shape_message_is_exact():
    with pytest.raises(ValueError) as err:
        check_shape(torch.zeros(4, 17, 2), "joints3d", "(..., J, 3)")
    assert str(err.value) == "joints3d must have shape (..., J, 3), got (4, 17, 2)"


def test_check_shape_sizes_bind_names_and_appear_in_the_message():
    assert check_shape(torch.zeros(2, 17, 3), "j", "(..., J, D)", sizes={"J": 17, "X": 1}) == {
        "J": 17,
        "D": 3,
    }
    with _raises(ValueError, "joints must have shape (..., J, D) with J = 17 for skeleton 'h36m17'",
                 "got (2, 15, 3)"):
        check_shape(torch.zeros(2, 15, 3), "joints", "(..., J, D) for skeleton 'h36m17'",
                    sizes={"J": 17})
    dims = check_shape(torch.zeros(2, 4, 5, 6, 7), "volumes", "(..., J, D, H, W)")
    check_shape(torch.zeros(5, 6, 7, 3), "grid", "(..., D, H, W, 3)", sizes=dims)
    with _raises(ValueError, "grid must have shape (..., D, H, W, 3) with D = 5, H = 6, W = 7",
                 "got (5, 6, 6, 3)"):
        check_shape(torch.zeros(5, 6, 6, 3), "grid", "(..., D, H, W, 3)", sizes=dims)


def test_check_shape_annotation_is_printed_not_parsed():
    check_shape(torch.zeros(2, 5), "dist", "(..., 5) = (k1, k2, p1, p2, k3)")
    with _raises(ValueError, "dist must have shape (..., 5) = (k1, k2, p1, p2, k3), got (2, 4)"):
        check_shape(torch.zeros(2, 4), "dist", "(..., 5) = (k1, k2, p1, p2, k3)")


def test_check_shape_type_and_bad_patterns():
    with _raises(TypeError, "uv must be a torch.Tensor", "got list"):
        check_shape([[0.0, 0.0]], "uv", "(..., N, 2)")
    for bad in ("..., 3", "(*, ..., 3)", "(J, 3.5)", "(J, , 3)"):
        with pytest.raises(ValueError, match="pattern"):
            check_shape(torch.zeros(3), "x", bad)


# --------------------------------------------------------------------------------------------
# check_same_shape
# --------------------------------------------------------------------------------------------
def test_check_same_shape():
    check_same_shape(torch.zeros(2, 3), torch.zeros(2, 3), ("a", "b"))
    check_same_shape(torch.zeros(5, 17, 3), torch.zeros(17, 3), ("pred", "gt"), last=2)
    with _raises(ValueError, "pred and gt must have the same last 2 dimensions",
                 "got (2, 17, 3) and (2, 16, 3)"):
        check_same_shape(torch.zeros(2, 17, 3), torch.zeros(2, 16, 3), ("pred", "gt"), last=2)
    with _raises(ValueError, "uv_a and uv_b must have the same shape", "got (2, 2) and (3, 2)"):
        check_same_shape(torch.zeros(2, 2), torch.zeros(3, 2), ("uv_a", "uv_b"))
    with _raises(ValueError, "a and b must have the same last 2 dimensions", "got (3,) and (3,)"):
        check_same_shape(torch.zeros(3), torch.zeros(3), ("a", "b"), last=2)
    with _raises(TypeError, "gt must be a torch.Tensor"):
        check_same_shape(torch.zeros(3), [0.0, 0.0, 0.0], ("pred", "gt"))


# --------------------------------------------------------------------------------------------
# check_finite
# --------------------------------------------------------------------------------------------
def test_check_finite():
    check_finite(torch.zeros(3, 4), "P")
    with _raises(ValueError, "P must be finite", "2 NaN or inf", "(3, 4)"):
        x = torch.zeros(3, 4)
        x[0, 0], x[1, 2] = float("nan"), float("inf")
        check_finite(x, "P")


# --------------------------------------------------------------------------------------------
# check_index
# --------------------------------------------------------------------------------------------
def test_check_index():
    assert check_index(3, "root", 17) == 3
    assert check_index(-1, "root", 17) == -1
    assert check_index(np.int64(2), "root", 17) == 2
    assert type(check_index(np.int64(2), "root", 17)) is int
    with _raises(ValueError, "root must be an int in [-17, 17)", "got 17"):
        check_index(17, "root", 17)
    with _raises(ValueError, "root must be an int in [0, 17)", "got -1"):
        check_index(-1, "root", 17, negative=False)
    with _raises(TypeError, "axis must be an int", "got 1.0"):
        check_index(1.0, "axis", 3)
    with _raises(TypeError, "axis must be an int", "got True"):
        check_index(True, "axis", 3)


# --------------------------------------------------------------------------------------------
# check_positive
# --------------------------------------------------------------------------------------------
def test_check_positive_accepts():
    assert check_positive(0.5, "sigma") == 0.5
    assert check_positive(3, "resolution", integer=True) == 3
    assert check_positive(0, "iterations", integer=True, strict=False) == 0
    t = torch.tensor([1.0, 2.0])
    assert check_positive(t, "sigma") is t
    assert check_positive(np.float32(2.0), "size") == 2.0


@pytest.mark.parametrize(
    ("value", "kwargs", "parts"),
    [
        (0, {"integer": True}, ("resolution must be a positive int", "got 0")),
        (2.5, {"integer": True}, ("resolution must be a positive int", "got 2.5")),
        (True, {"integer": True}, ("resolution must be a positive int", "got True")),
        (-1, {"integer": True, "strict": False}, ("resolution must be an int >= 0", "got -1")),
        (0.0, {}, ("resolution must be a positive number", "got 0.0")),
        (float("nan"), {}, ("resolution must be a positive number", "got nan")),
        ("3", {}, ("resolution must be a positive number", "got '3'")),
        (-0.1, {"strict": False}, ("resolution must be a number >= 0", "got -0.1")),
        (torch.tensor([1.0, 0.0]), {}, ("resolution must be a positive number (every element)",
                                        "got [1.0, 0.0]")),
        (torch.tensor(-1.0), {}, ("resolution must be a positive number, got -1.0",)),
    ],
)
def test_check_positive_rejects_with_value_error(value, kwargs, parts):
    with _raises(ValueError, *parts):
        check_positive(value, "resolution", **kwargs)


# --------------------------------------------------------------------------------------------
# check_choice
# --------------------------------------------------------------------------------------------
def test_check_choice():
    assert check_choice("mean", "reduction", ("mean", "sum")) == "mean"
    with _raises(ValueError, "reduction must be one of ('mean', 'sum')", "got 'avg'"):
        check_choice("avg", "reduction", ("mean", "sum"))
    with _raises(ValueError, "mode must be one of ('sum', 'conf')", "got None"):
        check_choice(None, "mode", ["sum", "conf"])


# --------------------------------------------------------------------------------------------
# broadcast_batch, common_float_dtype
# --------------------------------------------------------------------------------------------
def test_broadcast_batch():
    assert broadcast_batch({"K": (2, 1), "R": (3,), "t": ()}) == torch.Size([2, 3])
    with _raises(ValueError, "batch shapes do not broadcast", "K (2,)", "R (3,)"):
        broadcast_batch({"K": (2,), "R": (3,)})


def test_common_float_dtype():
    f32, f64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    assert common_float_dtype(f32, None, f64) == torch.float64
    assert common_float_dtype(torch.zeros(1, dtype=torch.float16)) == torch.float16
    assert common_float_dtype() == torch.get_default_dtype()
    assert common_float_dtype(torch.zeros(1, dtype=torch.int64)) == torch.get_default_dtype()
