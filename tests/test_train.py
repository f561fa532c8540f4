"""Tests of the generic training loop (mvbook.train)."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from mvbook import train as T
from mvbook.train import TrainConfig, TrainHistory, find_checkpoint, load_checkpoint, train

matplotlib.use("Agg")


class NoisyData(torch.utils.data.Dataset):
    """Regression data whose items use Python, NumPy and torch randomness (augmentation)."""

    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.randn(8, 3, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        jitter = 0.01 * (random.random() + float(np.random.rand()) + torch.rand(()).item())  # noqa: NPY002
        return {"x": self.x[i] + jitter, "y": self.y[i]}


def make_model() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def mse_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"rmse": loss.detach().sqrt()}


def run(steps: int, ckpt: Path | None = None, every: int = 0) -> tuple[nn.Module, TrainHistory]:
    model = make_model()
    loader = T.make_loader(NoisyData(), batch_size=16, seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.8)
    config = TrainConfig(steps=steps, seed=11, device="cpu", checkpoint_dir=ckpt,
                         checkpoint_every=every, log_every=5, progress=False, keep_checkpoints=3)
    history = train(model, mse_loss, loader, config, optimizer=optimizer, scheduler=scheduler)
    return model, history


def test_short_training_lowers_the_loss():
    _, history = run(60)
    steps, losses = history.series("loss")
    assert steps[-1] == 60 and len(history.records) == 12
    assert losses[-1] < 0.5 * losses[0]
    assert "rmse" in history.keys() and "lr" in history.keys()
    fig = history.plot()
    assert fig.axes and fig.axes[0].get_lines()


@pytest.mark.parametrize("drop_last_ckpt", [False, True])
def test_resume_is_bitwise_identical(tmp_path, drop_last_ckpt):
    reference, ref_history = run(40)
    # an interrupted run: 25 steps with checkpoints at 10, 20 (end of an epoch) and 25
    run(25, ckpt=tmp_path, every=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000000010.pt", "step_000000020.pt", "step_000000025.pt"]
    if drop_last_ckpt:  # resume from a checkpoint at an epoch boundary instead
        (tmp_path / "step_000000025.pt").unlink()
    resumed, history = run(40, ckpt=tmp_path, every=10)
    assert history.resumed_from == (20 if drop_last_ckpt else 25)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # the history carries the records of the first run and matches the uninterrupted one
    assert [r["step"] for r in history.records] == [r["step"] for r in ref_history.records]
    assert history.last("loss") == ref_history.last("loss")
    # a finished run resumes to a no-op
    again, h3 = run(40, ckpt=tmp_path)
    assert h3.steps_done == 0 and torch.equal(next(again.parameters()), next(resumed.parameters()))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "step_000000001.pt"
    T.save_checkpoint({"w": torch.ones(3)}, path)

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))  # old content intact


def test_load_uses_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "step_000000002.pt"
    torch.save({"evil": os.path.join}, path)  # an arbitrary Python object: refused by weights_only
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    T.save_checkpoint({"w": torch.ones(1)}, path)
    load_checkpoint(path)
    assert seen.get("weights_only") is True
    assert find_checkpoint(tmp_path) == path


def test_input_validation_and_nonfinite_loss():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=-1)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(steps=1, amp="fp8")
    with pytest.raises(ValueError, match="fp16"):
        T.resolve_amp("fp16", torch.device("cpu"))
    assert T.resolve_amp("auto", torch.device("cpu")) == "off"
    model = make_model()
    batches = [{"x": torch.randn(4, 8), "y": torch.randn(4, 3)}]
    with pytest.raises(FloatingPointError):
        train(model, lambda m, b: (m(b["x"]).sum() * float("nan"), {}), batches,
              TrainConfig(steps=3, log_every=1, progress=False, device="cpu"))
    with pytest.raises(ValueError, match="ran out"):
        train(model, mse_loss, iter(batches), TrainConfig(steps=3, progress=False, device="cpu"))
    with pytest.raises(TypeError, match="model"):
        train(lambda x: x, mse_loss, batches, TrainConfig(steps=1))


def test_bf16_autocast_on_cpu_runs():
    model = make_model()
    batches = [{"x": torch.randn(8, 8), "y": torch.randn(8, 3)}]
    history = train(model, mse_loss, batches,
                    TrainConfig(steps=3, amp="bf16", progress=False, device="cpu", log_every=1))
    assert history.amp == "bf16" and len(history.records) == 3


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes: replicas stay identical, only rank 0 checkpoints."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "mvbook.train", "demo",
           "--steps", "12", "--no-progress", "--device", "cpu",
           "--checkpoint-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.replace("rank=", "\nrank=").splitlines()
             if ln.startswith("rank=")]
    assert len(lines) == 2, out.stdout
    sums = {ln.split("param_checksum=")[1].strip() for ln in lines}
    assert len(sums) == 1, lines  # both replicas hold the same parameters
    assert {ln.split()[1] for ln in lines} == {"world_size=2"}
    assert [p.name for p in tmp_path.iterdir()] == ["step_000000012.pt"]
    ckpt = load_checkpoint(tmp_path / "step_000000012.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
