"""The generic training loop shared by every chapter.

One function, :func:`train`, runs ``config.steps`` optimisation steps of a model on a cycled
iterable of batches. It takes care of what every chapter needs and none should re-implement:

- the device (``"auto"`` picks CUDA when present; never a hard-coded ``.cuda()``),
- automatic mixed precision on CUDA (bf16 autocast where supported, else fp16 autocast with a
  gradient scaler),
- a progress bar and a :class:`TrainHistory` of averaged losses with :meth:`TrainHistory.plot`,
- seeds, and periodic checkpoints written atomically (a temporary file, then ``os.replace``)
  holding the model, optimizer, scheduler, gradient scaler, step, history and every random
  state (torch, CUDA, NumPy, Python, data-loader generators) together with the position of the
  data iterator, so that resuming gives bitwise the same parameters as an uninterrupted run
  (on the same machine and device); checkpoints are loaded with ``torch.load(weights_only=True)``,
- data-parallel training across processes: when launched by ``torchrun`` (the environment has
  ``WORLD_SIZE > 1``) the process group is initialised (``gloo`` on CPU, ``nccl`` on CUDA),
  the model is wrapped in ``DistributedDataParallel`` and only rank 0 shows progress and
  writes checkpoints. Give each rank its share of the data with :func:`make_loader` (or an
  iterable with a true ``shards_by_rank`` attribute that draws a different stream per rank).

The loss function has the signature ``loss_fn(model, batch) -> (loss, logs)`` with ``loss`` a
scalar tensor and ``logs`` a ``dict[str, float | tensor]`` of extra scalars to plot. Under
``DistributedDataParallel`` the ``model`` it receives is the wrapper: run the forward pass as
``model(...)`` so that gradients are synchronised (use :func:`unwrap_model` to reach
attributes of the underlying module). The loop checks once, after the first step, that the
parameters are still equal on all ranks and raises if they are not.

Running a chapter's full profile on several GPUs::

    torchrun --standalone --nproc_per_node=4 -m mvbook.train \\
        mvbook.methods.weak25d:main --profile full --data /data/h36m --checkpoint-dir runs/w25

``python -m mvbook.train TARGET [options]`` imports ``TARGET`` (``module:function``) and calls
it with the keyword arguments ``profile``, ``data``, ``device``, ``seed`` and
``checkpoint_dir``; ``python -m mvbook.train demo`` trains a small regression model (a smoke
test of the loop, of checkpoints and of ``torchrun``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import math
import os
import pickle
import random
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mvbook.runtime import resolve_device, seed_everything

__all__ = [
    "TrainConfig",
    "TrainHistory",
    "train",
    "make_loader",
    "unwrap_model",
    "to_device",
    "CheckpointError",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "save_checkpoint",
    "distributed_info",
    "resolve_amp",
    "main",
]

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
CHECKPOINT_FORMAT = 1
AMP_MODES = ("auto", "off", "bf16", "fp16")


# --------------------------------------------------------------------------------------------
# configuration and history
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        steps: number of optimisation steps (the total, counting steps done before a resume).
        lr: learning rate of the default optimizer (AdamW).
        weight_decay: decoupled weight decay of the default optimizer.
        grad_clip: clip the global gradient 2-norm to this value (None: no clipping).
        amp: ``"auto"`` (bf16 autocast on CUDA devices that support it, else fp16 with a
            gradient scaler; off on CPU), ``"off"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``. Under
            ``torchrun`` on CUDA each rank uses ``cuda:LOCAL_RANK``.
        seed: seeds Python, NumPy and torch at the start (None: leave the random state alone).
        checkpoint_dir: folder for checkpoints (None: no checkpoints, no resume).
        checkpoint_every: write a checkpoint every this many steps (0: only at the end).
        log_every: average the logged scalars over this many steps into one history record.
        progress: show a tqdm progress bar (rank 0 only).
        keep_checkpoints: how many of the newest checkpoints to keep (older ones are deleted).
        resume: resume from the newest checkpoint in ``checkpoint_dir`` if there is one.
        desc: label of the progress bar.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"
    device: str | torch.device = "auto"
    seed: int | None = 0
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 0
    log_every: int = 10
    progress: bool = True
    keep_checkpoints: int = 2
    resume: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr >= 0):
            raise ValueError(f"lr must be a non-negative number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        for name in ("checkpoint_every", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.log_every == 0:
            raise ValueError("log_every must be >= 1")
        if self.keep_checkpoints == 0:
            raise ValueError("keep_checkpoints must be >= 1")


@dataclass
class TrainHistory:
    """What :func:`train` logged: one record per ``log_every`` steps.

    Each record is a dict with ``step`` (the last step it covers), ``loss`` and every key of the
    loss function's logs (means over the covered steps), ``lr`` (of the first parameter group)
    and ``time`` (seconds since the start of this run). ``resumed_from`` is the step a resumed
    run started at (0 for a fresh run).
    """

    records: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    steps_done: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    amp: str = "off"

    def keys(self) -> list[str]:
        """Names of the logged scalars (besides ``step``), in first-seen order."""
        out: list[str] = []
        for rec in self.records:
            for key in rec:
                if key != "step" and key not in out:
                    out.append(key)
        return out

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one logged scalar (records without it are skipped)."""
        pairs = [(r["step"], r[key]) for r in self.records if key in r]
        if not pairs:
            raise KeyError(f"{key!r} was not logged; logged keys: {self.keys()}")
        steps, values = zip(*pairs)
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)

    def last(self, key: str = "loss") -> float:
        """The latest logged value of ``key``."""
        return float(self.series(key)[1][-1])

    def plot(self, keys: Iterable[str] | None = None, ax: Any = None, logy: bool = True,
             title: str | None = None) -> Any:
        """Draw the loss curves with matplotlib; returns the figure.

        Args:
            keys: the scalars to draw (default: every logged key except ``lr`` and ``time``).
            ax: a matplotlib axes to draw into (default: a new figure).
            logy: logarithmic y axis when all values are positive.
            title: axes title.
        """
        import matplotlib.pyplot as plt

        if keys is None:
            keys = [k for k in self.keys() if k not in ("lr", "time")]
        keys = list(keys)
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
        else:
            fig = ax.figure
        positive = True
        for key in keys:
            steps, values = self.series(key)
            ax.plot(steps, values, label=key)
            positive = positive and bool(np.all(values[np.isfinite(values)] > 0))
        if logy and positive and keys and self.records:
            ax.set_yscale("log")
        if self.resumed_from:
            ax.axvline(self.resumed_from, color="gray", lw=0.8, ls="--", label="resumed")
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        if title:
            ax.set_title(title)
        if keys:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return fig

    def state_dict(self, seconds: float | None = None) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records],
                "seconds": float(self.seconds if seconds is None else seconds)}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``model``)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def to_device(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move every tensor in a nested dict/list/tuple to ``device``; other values are kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking and device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a ``torchrun`` launch (world_size 1 without one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_info() -> DistInfo:
    """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_world_size(), dist.get_rank(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(world, rank, local)


def _init_distributed(device: torch.device) -> tuple[DistInfo, torch.device, bool]:
    """Initialise the process group when launched by torchrun; return (info, device, created)."""
    info = distributed_info()
    if not info.enabled:
        return info, device, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        created = True
    return distributed_info(), device, created


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, *, shuffle: bool = True,
                seed: int = 0, num_workers: int = 0, drop_last: bool = True,
                collate_fn: Callable | None = None, **kwargs: Any) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` for :func:`train`: seeded shuffling, and under ``torchrun`` a
    ``DistributedSampler`` so that each rank sees its own share (``batch_size`` is per rank).

    The loop calls ``sampler.set_epoch(epoch)`` each time it starts a new pass over the data.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    info = distributed_info()
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if info.enabled:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
            drop_last=drop_last)
        shuffle = False
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, collate_fn=collate_fn,
        generator=generator, persistent_workers=False, **kwargs)


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed-precision mode actually used: ``"off"``, ``"bf16"`` or ``"fp16"``."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    return amp


# --------------------------------------------------------------------------------------------
# random states as checkpoint-friendly (weights_only) values
# --------------------------------------------------------------------------------------------


def _data_generators(data: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects a DataLoader-like iterable draws its order from."""
    found: list[torch.Generator] = []
    candidates = [getattr(data, "generator", None)]
    sampler = getattr(data, "sampler", None)
    candidates.append(getattr(sampler, "generator", None))
    batch_sampler = getattr(data, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    candidates.append(getattr(inner, "generator", None))
    for gen in candidates:
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _rng_state(data: Any) -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": int(py_version),
                   "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached": float(np_cached)},
        "torch": torch.get_rng_state(),
        "data": [g.get_state() for g in _data_generators(data)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: Mapping[str, Any], data: Any) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np_state = (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                npst["has_gauss"], npst["cached"])
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    gens = _data_generators(data)
    saved = state.get("data", [])
    if len(saved) != len(gens):
        warnings.warn(f"the checkpoint has {len(saved)} data-loader generator states but the data "
                      f"has {len(gens)}; the data order after resuming may differ", stacklevel=3)
    for gen, gstate in zip(gens, saved):
        gen.set_state(gstate)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def find_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The newest ``step_<n>.pt`` in ``checkpoint_dir`` (largest ``n``), or None."""
    if checkpoint_dir is None:
        return None
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for path in folder.iterdir():
        m = CHECKPOINT_PATTERN.match(path.name)
        if m and path.is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return None if best is None else best[1]


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` atomically: into a temporary file in the same
    folder, flushed to disk, then ``os.replace``-d onto ``path`` (a reader never sees a partial
    file; an interrupted write leaves the previous checkpoint intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


class CheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint file cannot be read (truncated, corrupted, refused by ``weights_only``, or
    not a checkpoint); an ``UnpicklingError`` too, as ``torch.load`` raises for a refusal."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``
    (no arbitrary code runs while unpickling). A file that cannot be read raises
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'damaged'})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def list_checkpoints(checkpoint_dir: str | os.PathLike | None) -> list[Path]:
    """Every ``step_<n>.pt`` in ``checkpoint_dir``, newest (largest ``n``) first."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).iterdir()
             if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def load_latest_checkpoint(checkpoint_dir: str | os.PathLike | None,
                           map_location: str | torch.device = "cpu"
                           ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``checkpoint_dir`` that loads and is one of this loop's, as
    ``(path, state)``; ``None`` when there is none. Damaged ones are skipped with a warning
    naming them (and left in place); when every checkpoint is damaged
    :class:`CheckpointError` lists them."""
    damaged: list[str] = []
    for path in list_checkpoints(checkpoint_dir):
        try:
            state = load_checkpoint(path, map_location=map_location)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path} is not a checkpoint of this training loop")
        except CheckpointError as err:
            damaged.append(str(err))
            warnings.warn(f"{err}; skipping it and resuming from an earlier checkpoint",
                          stacklevel=2)
            continue
        return path, state
    if damaged:
        raise CheckpointError(
            "no intact checkpoint to resume from in " f"{checkpoint_dir}: " + "; ".join(damaged)
            + ". Move them away to train from the start, or pass resume=False")
    return None


def _prune_checkpoints(folder: Path, keep: int) -> None:
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if (m := CHECKPOINT_PATTERN.match(p.name)))
    for _, path in found[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _plain_config(config: TrainConfig) -> dict[str, Any]:
    out = {}
    for key, value in asdict(config).items():
        out[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return out


# --------------------------------------------------------------------------------------------
# the data cycle with a resumable position
# --------------------------------------------------------------------------------------------


class _DataCycle:
    """Cycle over ``data`` for ever, remembering (epoch, batches consumed in this epoch) and the
    random state at the start of the epoch, so that the position can be restored exactly."""

    def __init__(self, data: Iterable, info: DistInfo):
        if not isinstance(data, Iterable):
            raise TypeError(f"data must be an iterable of batches, got {type(data).__name__}")
        self.data = data
        self.info = info
        self.one_shot = iter(data) is data  # an iterator/generator cannot be restarted
        self.epoch = -1
        self.consumed = 0
        self.epoch_rng: dict[str, Any] | None = None
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        self.epoch += 1
        self.consumed = 0
        sampler = getattr(self.data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.epoch_rng = _rng_state(self.data)
        self._it = iter(self.data)

    def next(self) -> Any:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            if self.one_shot:
                raise ValueError("data is an iterator that ran out of batches; pass a "
                                 "re-iterable (a list, a DataLoader) or an endless iterator") from None
            if self.consumed == 0:
                raise ValueError("data yielded no batches") from None
            self._start_epoch()
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("data yielded no batches") from None
        self.consumed += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "epoch_rng": self.epoch_rng}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replay the epoch start (its random state, ``set_epoch``) and skip the consumed batches.

        Skipping fetches the batches (the generic way that works for any iterable, including
        data-loader workers and random augmentations); the caller restores the current random
        state afterwards."""
        epoch = int(state["epoch"])
        if epoch < 0:
            return
        if self.one_shot and epoch > 0:
            raise ValueError("cannot resume a one-shot iterator past its first pass")
        self.epoch = epoch - 1
        if state.get("epoch_rng") is not None:
            _set_rng_state(state["epoch_rng"], self.data)
        # _start_epoch increments epoch and snapshots the (restored) random state.
        self._start_epoch()
        for _ in range(int(state["consumed"])):
            next(self._it)
            self.consumed += 1


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float()
    return float(value)


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _check_replicas_equal(model: nn.Module) -> None:
    """After the first step under DDP: the parameters must be identical on all ranks."""
    with torch.no_grad():
        flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
        checksum = torch.stack([flat.sum(), (flat * flat).sum()]).double()
        ref = checksum.clone()
        dist.broadcast(ref, src=0)
        ok = torch.tensor([float(torch.allclose(checksum, ref, rtol=1e-6, atol=1e-6))],
                          device=checksum.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if ok.item() < 1:
        raise RuntimeError("model parameters differ between ranks after the first step: the "
                           "loss function must run the forward pass through the model it is "
                           "given (model(...)), not through unwrap_model(model)")


def train(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any], data: Iterable,
          config: TrainConfig, optimizer: torch.optim.Optimizer | None = None,
          scheduler: Any = None) -> TrainHistory:
    """Train ``model`` for ``config.steps`` steps; return the :class:`TrainHistory`.

    Args:
        model: the ``nn.Module``; moved to the resolved device (in place) and set to train mode.
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``: ``loss`` a scalar tensor, ``logs`` a
            dict of extra scalars (floats or 0-d tensors) averaged into the history. A bare
            tensor is accepted as ``(loss, {})``. The batch arrives with its tensors on the
            device (see :func:`to_device`).
        data: an iterable of batches (a list, a ``DataLoader``, ...), cycled for ``steps``
            steps; an endless iterator also works. Use :func:`make_loader` for seeded
            shuffling and for ``torchrun``.
        config: a :class:`TrainConfig`.
        optimizer: default ``AdamW(params, lr, weight_decay)`` over the trainable parameters.
            Must be built on the model's parameters *after* moving the model to the device if
            the device is not the CPU (or leave it None).
        scheduler: an optional learning-rate scheduler, stepped once per step.

    Resuming: if ``config.checkpoint_dir`` holds checkpoints (and ``config.resume``), the
    newest is loaded (``weights_only=True``) and training continues from its step with the
    random states and the data position it saved; the returned history contains the records
    of the earlier run too. If the checkpoint already reached ``config.steps`` the model is
    just loaded.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(model, batch) -> (loss, logs)")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")

    device = resolve_device(config.device)
    info, device, created_group = _init_distributed(device)
    amp = resolve_amp(config.amp, device)
    if config.seed is not None:
        # the same seed on every rank: identical initial replicas. The deterministic-kernel
        # switch is left as the caller set it (train() never changed it).
        seed_everything(config.seed, deterministic=False)

    model.to(device)
    model.train()
    base = model
    params = [p for p in base.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    if info.enabled:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net: nn.Module = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
        sampler = getattr(data, "sampler", None)
        sharded = isinstance(sampler, torch.utils.data.DistributedSampler) or bool(
            getattr(data, "shards_by_rank", False))
        if info.is_main and not sharded:
            warnings.warn("training under torchrun without a DistributedSampler: every rank sees "
                          "the same batches (use mvbook.train.make_loader)", stacklevel=2)
    else:
        net = model

    history = TrainHistory(device=str(device), amp=amp)
    cycle = _DataCycle(data, info)
    step = 0
    prior_seconds = 0.0
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None

    # ---- resume -------------------------------------------------------------------------
    found = load_latest_checkpoint(folder, map_location="cpu") if config.resume else None
    if found is not None:
        _, ckpt = found
        base.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])
        history.records = [dict(r) for r in ckpt["history"]["records"]]
        prior_seconds = float(ckpt["history"].get("seconds", 0.0))
        history.resumed_from = step
        rank_states = ckpt["rng"]
        if len(rank_states) != info.world_size:
            warnings.warn(f"checkpoint written by {len(rank_states)} process(es), resuming with "
                          f"{info.world_size}: the random streams will differ", stacklevel=2)
        mine = rank_states[min(info.rank, len(rank_states) - 1)]
        if step < config.steps:
            cycle.restore(mine["data"])
        _set_rng_state(mine["rng"], data)

    def checkpoint(at_step: int) -> None:
        if folder is None:
            return
        mine = {"rng": _rng_state(data), "data": cycle.state()}
        if info.enabled:
            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        if info.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": at_step,
                "model": base.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "history": history.state_dict(prior_seconds + time.perf_counter() - t0),
                "rng": gathered,
                "world_size": info.world_size,
                "config": _plain_config(config),
            }
            save_checkpoint(state, folder / f"step_{at_step:09d}.pt")
            _prune_checkpoints(folder, config.keep_checkpoints)
        if info.enabled:
            dist.barrier()

    # ---- loop -----------------------------------------------------------------------------
    from tqdm.auto import tqdm

    start_step = step
    t0 = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc=config.desc,
               disable=not (config.progress and info.is_main), dynamic_ncols=True, leave=True)
    sums: dict[str, Any] = {}
    count = 0
    first_step = True
    try:
        while step < config.steps:
            batch = to_device(cycle.next(), device)
            optimizer.zero_grad(set_to_none=True)
            autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype)
                        if amp_dtype is not None else contextlib.nullcontext())
            with autocast:
                out = loss_fn(net, batch)
            loss, logs = (out if isinstance(out, tuple) else (out, {}))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError("loss_fn must return a scalar tensor loss (and a dict of logs)")
            loss = loss.reshape(()).float()
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if first_step and info.enabled:
                _check_replicas_equal(base)
            first_step = False

            sums["loss"] = sums.get("loss", 0.0) + loss.detach()
            for key, value in (logs or {}).items():
                sums[key] = sums.get(key, 0.0) + _as_float(value)
            count += 1
            if count == config.log_every or step == config.steps:
                rec: dict[str, float] = {"step": float(step)}
                for key, value in sums.items():
                    rec[key] = float(value) / count
                if not math.isfinite(rec["loss"]):  # checked here: no device sync every step
                    raise FloatingPointError(
                        f"the loss became {rec['loss']} between steps {step - count + 1} and {step}")
                rec["lr"] = float(optimizer.param_groups[0]["lr"])
                rec["time"] = time.perf_counter() - t0 + prior_seconds
                history.records.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4g}")
                sums, count = {}, 0
            bar.update(1)
            if (config.checkpoint_every and step % config.checkpoint_every == 0
                    and step < config.steps):
                checkpoint(step)
        if step > start_step or (folder is not None and find_checkpoint(folder) is None):
            checkpoint(step)
    finally:
        bar.close()
    if created_group:
        atexit.register(_destroy_group)
    history.steps_done = step - start_step
    history.seconds = prior_seconds + time.perf_counter() - t0
    model.eval()
    return history


# --------------------------------------------------------------------------------------------
# command line: python -m mvbook.train (demo | module:function) [options]
# --------------------------------------------------------------------------------------------


class _DemoData(torch.utils.data.Dataset):
    """A small regression problem: y = W x + noise, for the demo run."""

    def __init__(self, n: int = 512, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 16, generator=g)
        w = torch.randn(16, 4, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(n, 4, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _demo_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    pred = model(batch["x"])
    loss = torch.nn.functional.mse_loss(pred, batch["y"])
    return loss, {"rmse": loss.detach().sqrt()}


def demo(steps: int = 100, device: str = "auto", seed: int = 0,
         checkpoint_dir: str | None = None, checkpoint_every: int = 0, progress: bool = True,
         **_: Any) -> TrainHistory:
    """Train a two-layer MLP on a synthetic regression problem (checks the loop end to end)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
    loader = make_loader(_DemoData(seed=seed), batch_size=32, seed=seed)
    config = TrainConfig(steps=steps, lr=1e-2, device=device, seed=seed,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, desc="demo")
    history = train(model, _demo_loss, loader, config)
    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    info = distributed_info()
    print(f"rank={info.rank} world_size={info.world_size} steps={steps} "
          f"loss={history.last('loss'):.6f} param_checksum={flat.sum().item():.12e}", flush=True)
    return history


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mvbook.train",
        description="Run a chapter's training entry (or the demo) with the mvbook training loop; "
                    "launch under torchrun for data-parallel training, e.g. "
                    "`torchrun --standalone --nproc_per_node=4 -m mvbook.train "
                    "mvbook.methods.weak25d:main --profile full --data /data/h36m`.")
    parser.add_argument("target", help="'demo', or module:function called with the keyword "
                        "arguments profile, data, device, seed, checkpoint_dir (and steps if given)")
    parser.add_argument("--profile", default=os.environ.get("MVBOOK_PROFILE", "quick"),
                        choices=("smoke", "quick", "full"))
    parser.add_argument("--data", default="studio", help="'studio' or a converted dataset path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the profile's steps")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=0, help="(demo only)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs: dict[str, Any] = {"profile": args.profile, "data": args.data, "device": args.device,
                              "seed": args.seed, "checkpoint_dir": args.checkpoint_dir}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    if args.target == "demo":
        demo(steps=args.steps or 100, device=args.device, seed=args.seed,
             checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
             progress=not args.no_progress)
        return 0
    if ":" not in args.target:
        raise SystemExit(f"target must be 'demo' or module:function, got {args.target!r}")
    module_name, func_name = args.target.split(":", 1)
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(**kwargs)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
