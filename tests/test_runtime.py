"""Tests of mvbook.runtime (profiles, devices, seeding) and the command-line dispatcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvbook import cli
from mvbook.runtime import (
    PROFILES,
    by_profile,
    check_profile,
    default_profile,
    parse_device,
    resolve_device,
    seed_everything,
)


def test_default_profile_reads_environment(monkeypatch):
    monkeypatch.delenv("MVBOOK_PROFILE", raising=False)
    assert default_profile() == "quick"
    monkeypatch.setenv("MVBOOK_PROFILE", "smoke")
    assert default_profile() == "smoke"
    monkeypatch.setenv("MVBOOK_PROFILE", "fast")
    with pytest.raises(ValueError, match="profile must be one of"):
        default_profile()


def test_by_profile_picks_the_profile_value():
    assert [by_profile(p, smoke=1, quick=2, full=3) for p in PROFILES] == [1, 2, 3]
    with pytest.raises(ValueError, match="profile"):
        check_profile("medium")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(TypeError, match="device"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("text", ["gpu", "GPU", "cuda:x", "cuda:-1", " cpu", ""])
def test_resolve_device_names_an_unknown_device(text):
    with pytest.raises(ValueError) as exc:
        resolve_device(text)
    msg = str(exc.value)
    assert "\n" not in msg and f"device={text!r}" in msg
    for form in ("'auto'", "'cpu'", "'cuda'", "'cuda:N'", "torch.device"):
        assert form in msg, (form, msg)
    assert not isinstance(exc.value, RuntimeError)
    with pytest.raises(ValueError, match=f"^--device={text!r} is not a device"):
        parse_device(text, "--device")


def test_parse_device_checks_the_form_only():
    assert parse_device("auto") == "auto"
    assert parse_device("cuda:3") == torch.device("cuda", 3)  # whether or not there is a GPU
    assert parse_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(TypeError, match="dev must be a str"):
        parse_device(None, "dev")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match=r"^device='cuda(:\d)?' was requested but CUDA is not "
                                         r"available on this machine; use 'auto' or 'cpu'$"):
        resolve_device(device)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_index_the_machine_lacks():
    n = torch.cuda.device_count()
    assert resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
    with pytest.raises(ValueError, match=f"has {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_seed_everything_repeats_random_streams():
    seed_everything(7)
    a = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    seed_everything(7)
    b = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    g1, g2 = seed_everything(1), seed_everything(1)
    assert torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
