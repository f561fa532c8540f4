"""Build the studio datasets (cached) and open them: :func:`build_studio`, :func:`open_data`.

A build plans every sequence (:mod:`mvbook.studio.scenes`), poses the bodies, renders all views
with the ray-caster and streams the samples into the common on-disk format
(:class:`mvbook.data.format.DatasetWriter`). The folder lives in the cache
(``$MVBOOK_CACHE`` or ``~/.cache/mvbook``) under ``studio/<scene>-<profile>-<config hash>``, so a
second call with the same configuration returns at once; an interrupted build resumes.

Studio specifics of the common format: ``visibility`` is True for a joint that projects inside
the image *and* is not occluded (the camera ray towards it first meets the same person on a
part adjacent to the joint); ``joints2d`` holds every joint in front of the camera; ``bbox`` is the
amodal box of the whole body clipped to the image; ``masks`` hold ``p + 1`` for person ``p``;
``iuv`` holds the part index I (see :data:`mvbook.studio.body.PART_NAMES`) and the chart
coordinates U, V; the static ``background`` of each camera is stored once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mvbook.runtime import resolve_device
from mvbook.studio import motion
from mvbook.studio.appearance import RoomStyle, add_sensor_noise
from mvbook.studio.body import H36M_JOINTS, NUM_PARTS, PART_NAMES
from mvbook.studio.render import Renderer, RenderResult
from mvbook.studio.rigs import make_rig
from mvbook.studio.scenes import (
    StudioConfig,
    plan_sequences,
    pose_sequence,
    profile_config,
    seeded_generator,
)

_RAYS_PER_BATCH = 1 << 22  # rays rendered at once during a build (memory bound)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$MVBOOK_CACHE``, else ``~/.cache/mvbook``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MVBOOK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mvbook"


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock so that parallel processes build a folder once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def dataset_path(config: StudioConfig, profile: str = "custom",
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the dataset of ``config`` lives in the cache."""
    return cache_root(cache_dir) / "studio" / f"{config.scene}-{profile}-{config.digest()}"


def build_studio(
    profile: str = "quick",
    scene: str = "single",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    device: str | torch.device | None = None,
    threads: int | None = 1,
    rebuild: bool = False,
    config: StudioConfig | None = None,
    verify: bool = False,
    **overrides,
) -> Path:
    """Build (or find in the cache) a studio dataset; return its folder.

    Args:
        profile: ``"smoke"`` (seconds), ``"quick"`` (CPU, about a minute) or ``"full"`` (GPU).
        scene: ``"single"`` (Human3.6M-like rig, subjects S1..S11) or ``"multi"`` (Panoptic-like,
            1 to 5 people).
        seed: the seed of everything random (subjects, sequences, lighting, noise).
        cache_dir: the cache folder (default ``$MVBOOK_CACHE`` or ``~/.cache/mvbook``).
        progress: show a tqdm progress bar.
        device: where to render; default ``"auto"`` (CUDA when available) for ``full`` and
            ``"cpu"`` otherwise. Images agree across devices up to floating-point rounding.
        threads: CPU threads used while building (1 is fastest on a busy machine; None keeps
            torch's setting).
        rebuild: build again even if the folder exists.
        config: a full :class:`StudioConfig` (then ``profile`` only names the folder).
        verify: check the sha256 of every cached file (``mvbook studio build`` does). Without
            it a cached folder is still checked on every call: its manifest against the
            configuration, every file's header and length, and the sha256 of any file whose
            size or modification time changed since it was last verified (the build records
            them). A damaged cache is rebuilt, with a warning saying what was wrong.
        overrides: :class:`StudioConfig` fields replacing the profile's values, e.g.
            ``image_size=(96, 96)`` or ``store=("masks", "depth", "iuv")``.
    """
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    cfg = config if config is not None else profile_config(profile, scene, seed, **overrides)
    base = cache_root(cache_dir)
    for folder in (base, *base.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"cache_dir: {folder} is a file, not a folder")
            break
    root = dataset_path(cfg, profile, cache_dir)
    if device is None:
        device = "auto" if profile == "full" else "cpu"
    dev = resolve_device(device)  # a bad device fails before anything is built
    if (root / "manifest.json").exists() and not rebuild and cache_problem(root, cfg, verify) is None:
        return root
    with _lock(root.parent / f".{root.name}.lock"):
        damaged = False
        if (root / "manifest.json").exists() and not rebuild:
            problem = cache_problem(root, cfg, verify)
            if problem is None:
                return root
            warnings.warn(f"the studio cache {root} is damaged ({problem}); rebuilding it",
                          stacklevel=2)
            damaged = True
        with _threads(threads):
            _build(cfg, root, progress, dev, overwrite=rebuild or damaged)
    return root


def cache_problem(root: Path, cfg: StudioConfig, full: bool = False) -> str | None:
    """What is wrong with the cached studio folder ``root`` of ``cfg`` (None if nothing):
    the manifest (readable, consistent, of this configuration), each file's header and length,
    and the sha256 of every file (``full``) or of those changed since their last check."""
    from mvbook.data.spec import DatasetFormatError, check_files, read_manifest

    try:
        manifest = read_manifest(root)
    except DatasetFormatError as err:
        return str(err)
    if (manifest.get("provenance") or {}).get("config") != cfg.to_dict():
        return f"{root / 'manifest.json'} describes another configuration"
    problems = check_files(root, manifest, checksums=True if full else "changed")
    return problems[0] if problems else None


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _build(cfg: StudioConfig, root: Path, progress: bool, device: torch.device,
           overwrite: bool = False) -> Path:
    from mvbook.data.format import DatasetWriter

    t_start = time.perf_counter()
    plans = plan_sequences(cfg)
    if not plans:
        raise ValueError("the configuration has no sequences (frames/sequences are zero)")
    num = sum(p.num_frames for p in plans)
    rig = make_rig(cfg.rig, cfg.image_size, cfg.distortion)
    style = RoomStyle.sample(seeded_generator("room", cfg.seed, cfg.rig), rig.room.outdoor)
    renderer = Renderer(rig.cameras, rig.room, style, cfg.supersample, device)
    W, H = cfg.image_size
    P = cfg.num_persons
    C = renderer.num_views
    cams = renderer.cameras
    K = cams.K.cpu().numpy().astype(np.float32)
    R = cams.R.cpu().numpy().astype(np.float32)
    t = cams.t.cpu().numpy().astype(np.float32)
    dist = (np.zeros((C, 5), np.float32) if cams.dist is None
            else cams.dist.cpu().numpy().astype(np.float32))
    size = np.tile(np.array([W, H], np.int64), (C, 1))
    splits = ({"train": list(cfg.train_subjects), "test": list(cfg.test_subjects)}
              if cfg.scene == "single" else {})
    provenance = {
        "generator": "mvbook.studio",
        "config": cfg.to_dict(),
        "motion": "DeepMimic humanoid mocap clips shipped by pybullet_data (data/motions)",
        "parts": list(PART_NAMES),
        "rig": cfg.rig,
    }
    writer = DatasetWriter(
        root, num_samples=num, num_views=C, num_persons=P, num_joints=len(H36M_JOINTS),
        image_size=(W, H), skeleton="h36m17", joint_names=list(H36M_JOINTS),
        camera_names=list(rig.camera_names), dataset=f"studio-{cfg.scene}",
        optional_keys=(*cfg.store, "background"), splits=splits, provenance=provenance,
        overwrite=overwrite,
    )
    try:
        writer.set_static("background", _to_uint8(renderer.background))
        written = np.asarray(writer.written)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=num, desc=f"studio {cfg.scene} {W}x{H}x{C}", unit="frame")
        offset = 0
        for plan in plans:
            n = plan.num_frames
            if bool(written[offset : offset + n].all()):
                offset += n
                if bar is not None:
                    bar.update(n)
                continue
            prims, joints, looks = pose_sequence(plan)
            P_seq = joints.shape[1]
            jpad = torch.zeros(n, P, len(H36M_JOINTS), 3, dtype=torch.float32)
            jpad[:, :P_seq] = joints.float()
            valid = torch.zeros(P, dtype=torch.bool)
            valid[:P_seq] = True
            lights = plan.lighting.vector().expand(n, -1)
            looks_pad = torch.zeros(P, looks.shape[1])
            looks_pad[:P_seq] = looks
            prims = prims.to(torch.float32)
            # render in frame batches of about 4M rays to bound memory on large images
            per = max(1, _RAYS_PER_BATCH // (C * W * H * cfg.supersample**2))
            parts = [renderer.render(prims.frames(slice(a, a + per)), looks_pad,
                                     lights[a : a + per], jpad[a : a + per], valid)
                     for a in range(0, n, per)]
            out = RenderResult(*(torch.cat([getattr(o, f.name) for o in parts])
                                 for f in dataclasses.fields(RenderResult)))
            images = out.images
            if cfg.noise > 0:
                g = seeded_generator("noise", cfg.seed, plan.name)
                images = add_sensor_noise(images.cpu(), cfg.noise, g)
            images = _to_uint8(images)
            masks = out.masks.cpu().numpy()
            depth = out.depth.cpu().numpy().astype(np.float32)
            iuv = out.iuv.cpu().numpy().astype(np.float32)
            j2d = out.joints2d.cpu().numpy().astype(np.float32)
            vis = out.visibility.cpu().numpy()
            bbox = out.bbox.cpu().numpy().astype(np.float32)
            for i in range(n):  # one sample per frame (the writer stores by index)
                sample = {
                    "images": images[i], "K": K, "R": R, "t": t, "dist": dist,
                    "image_size": size, "joints3d": jpad[i].numpy(), "person_valid": valid.numpy(),
                    "joints2d": j2d[i], "visibility": vis[i], "bbox": bbox[i],
                    "frame": i, "subject": plan.subject, "action": plan.action,
                    "sequence": plan.name, "split": plan.split,
                }
                if "masks" in cfg.store:
                    sample["masks"] = masks[i]
                if "depth" in cfg.store:
                    sample["depth"] = depth[i]
                if "iuv" in cfg.store:
                    sample["iuv"] = iuv[i]
                writer.write(offset + i, sample)
            offset += n
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
        writer.provenance["build_seconds"] = round(time.perf_counter() - t_start, 2)
        writer.provenance["device"] = str(device)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def open_data(
    data: str | os.PathLike = "studio",
    profile: str = "quick",
    split: str | None = "train",
    scene: str = "single",
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    views=None,
    subjects=None,
    transform=None,
    keys=None,
    **overrides,
):
    """Open a dataset as a :class:`mvbook.data.format.MultiviewDataset`.

    ``data="studio"`` builds (or loads from the cache) the studio of ``profile``/``scene``/
    ``seed``; any other value is the path of a converted dataset folder. ``split`` is
    ``"train"``, ``"test"`` or None (everything). ``views``, ``subjects``, ``transform`` and
    ``keys`` go to the dataset; other keyword arguments override the studio configuration.
    """
    from mvbook.data.format import MultiviewDataset

    if isinstance(data, str) and data == "studio":
        root = build_studio(profile, scene, seed, cache_dir, progress, **overrides)
    else:
        if overrides:
            raise ValueError(f"studio options {sorted(overrides)} only apply to data='studio'")
        root = Path(data)
        if not (root / "manifest.json").exists():
            raise FileNotFoundError(
                f"data={str(data)!r} is neither 'studio' nor a converted dataset folder "
                f"(no manifest.json in {root}); see `mvbook data --help`"
            )
    return MultiviewDataset(root, split=split, views=views, subjects=subjects,
                            transform=transform, keys=keys)


__all__ = ["NUM_PARTS", "build_studio", "cache_root", "dataset_path", "motion", "open_data"]
