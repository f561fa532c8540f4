"""Training a zoo model from its recipe: :func:`train_model` (``mvbook zoo train``).

The studio datasets of the recipe are built (or found in the cache), their person crops made,
and the network trained by :func:`mvbook.train.train` (progress bar, periodic checkpoints in
``<out>/<name>-checkpoints``; an interrupted run resumes bitwise from there). The weights are
then rounded to half precision, the held-out metrics measured *with the rounded weights*, and
weights and card written (:func:`mvbook.zoo.store.write_model`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mvbook.runtime import resolve_device
from mvbook.schedules import warmup_cosine
from mvbook.train import TrainConfig, make_loader, train

from .recipes import Recipe, check_no_test_data, recipe
from .store import default_folder, half_state, weights_path, write_model
from .tasks import task

__all__ = ["train_model", "held_out_bank", "training_bank", "code_commit", "device_name"]


def code_commit() -> str:
    """The git commit of the code (``unknown`` outside a git checkout); ``+dirty`` when the
    package has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here.parent)], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _banks(configs, rec: Recipe, profile: str, progress: bool, cache_dir):
    from mvbook.data.format import MultiviewDataset
    from mvbook.studio.build import build_studio

    banks = []
    for cfg in configs:
        root = build_studio(profile, cfg.scene, cfg.seed, cache_dir, progress, config=cfg)
        banks.append(task(rec.name).person_crops(MultiviewDataset(root, split="train"), rec,
                                                 progress=progress))
    return type(banks[0]).cat(banks)


def training_bank(rec: Recipe, *, progress: bool = True, cache_dir=None):
    """The recipe's training crops (studio datasets built on first use)."""
    check_no_test_data(rec)
    return _banks(rec.train_data, rec, rec.profile, progress, cache_dir)


def held_out_bank(rec: Recipe, *, progress: bool = True, cache_dir=None):
    """The recipe's held-out crops (the sample the card's metrics are measured on)."""
    check_no_test_data(rec)
    return _banks([rec.held_out], rec, rec.profile, progress, cache_dir)


def train_model(
    name: str,
    profile: str = "quick",
    out: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
) -> dict[str, Any]:
    """Train zoo model ``name`` at size ``profile`` into ``out``; return its card.

    ``out`` defaults to :func:`mvbook.zoo.store.default_folder` except for ``quick``, whose
    default is the cache (``<cache>/zoo/quick``: the shipped weights are replaced only when
    ``out`` names the package folder). Existing weights in ``out`` are kept unless
    ``overwrite``; checkpoints in ``<out>/<name>-checkpoints`` are resumed from.
    """
    from mvbook.studio.build import cache_root

    rec = recipe(name, profile)
    check_no_test_data(rec)
    folder = Path(out) if out is not None else (
        cache_root(cache_dir) / "zoo" / "quick" if profile == "quick" else default_folder(profile, cache_dir))
    if weights_path(name, folder).exists() and not overwrite:
        raise FileExistsError(f"{weights_path(name, folder)} exists; pass --overwrite to train "
                              "it again (its checkpoints are resumed from)")
    dev = resolve_device(device)
    commit = code_commit()  # the code that trains (read now: the tree may change meanwhile)
    bank = training_bank(rec, progress=progress, cache_dir=cache_dir)
    held = held_out_bank(rec, progress=progress, cache_dir=cache_dir)
    torch.manual_seed(rec.seed)
    job = task(name)
    model = job.build_model(rec)
    optimizer = torch.optim.AdamW(model.to(dev).parameters(), lr=rec.lr,
                                  weight_decay=rec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(rec.steps, rec.warmup))
    every = checkpoint_every if checkpoint_every is not None else max(1, rec.steps // 40)
    config = TrainConfig(steps=rec.steps, lr=rec.lr, weight_decay=rec.weight_decay, device=dev,
                         seed=rec.seed, checkpoint_dir=folder / f"{name}-checkpoints",
                         checkpoint_every=every, log_every=max(1, rec.steps // 100),
                         progress=progress, desc=f"zoo {name} ({profile})")
    t0 = time.perf_counter()
    history = train(model, job.make_loss(rec), make_loader(bank, rec.batch, seed=rec.seed),
                    config, optimizer=optimizer, scheduler=scheduler)
    state = half_state(model)
    model.cpu().load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in state.items()})
    metrics = job.evaluate(model, held)
    card = {
        "name": name,
        "profile": profile,
        "description": rec.description,
        "recipe": rec.digest(),
        "data": rec.data_digest(),
        "code_commit": commit,
        "device": device_name(dev),
        "torch": torch.__version__,
        "train_seconds": round(history.seconds or (time.perf_counter() - t0), 1),
        "steps": rec.steps,
        "batch": rec.batch,
        "training_crops": len(bank),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float16",
        "held_out": {"data": rec.held_out.to_dict(), "metrics": metrics},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "final_loss": history.last("loss") if history.records else None,
    }
    write_model(name, folder, state, card, overwrite=overwrite)
    return card
