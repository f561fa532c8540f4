"""Damaged checkpoints: a truncated or corrupted latest checkpoint is skipped with a warning
naming it and training resumes from the newest intact one."""

from __future__ import annotations

import pytest
import torch
from test_train import run

from mvbook import train as T


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # flip bytes in the middle
        b = bytearray(data)
        for i in range(len(b) // 2, len(b) // 2 + 64):
            b[i] ^= 0xFF
        path.write_bytes(bytes(b))


@pytest.mark.parametrize("how", ["truncate", "empty"])
def test_load_checkpoint_names_a_damaged_file(tmp_path, how):
    path = tmp_path / "step_000000001.pt"
    T.save_checkpoint({"format": T.CHECKPOINT_FORMAT, "w": torch.ones(3)}, path)
    _damage(path, how)
    with pytest.raises(T.CheckpointError, match="step_000000001.pt"):
        T.load_checkpoint(path)


@pytest.mark.parametrize("how", ["truncate", "empty"])
def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, how):
    reference, _ = run(40)
    run(25, ckpt=tmp_path, every=10)  # checkpoints at 10, 20 and 25
    latest = tmp_path / "step_000000025.pt"
    _damage(latest, how)
    with pytest.warns(UserWarning, match=r"step_000000025\.pt.*skipping"):
        resumed, history = run(40, ckpt=tmp_path, every=10)
    assert history.resumed_from == 20
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_with_every_checkpoint_damaged_names_them(tmp_path):
    run(20, ckpt=tmp_path, every=10)
    for p in tmp_path.glob("step_*.pt"):
        _damage(p, "truncate")
    with pytest.raises(T.CheckpointError, match=r"no intact checkpoint.*step_000000020\.pt"):
        with pytest.warns(UserWarning):
            run(40, ckpt=tmp_path, every=10)
    assert len(list(tmp_path.glob("step_*.pt"))) == 2  # nothing deleted
