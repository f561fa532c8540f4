"""Check a dataset folder in the common format: completeness, checksums, reprojection.

:func:`verify_dataset` reads the folder's ``manifest.json`` and every array it lists (memory
mapped) and reports, in a :class:`VerifyReport`, every problem it finds: missing or unreadable
files, shapes and dtypes that disagree with :data:`mvbook.data.spec.SAMPLE_KEYS` or the
manifest, checksum mismatches, string ids outside their vocabularies, non-finite cameras or
non-orthonormal rotations, inverted boxes, and stored ``joints2d`` that differ from
``joints3d`` projected with the stored cameras. ``mvbook data check`` runs it, and
``mvbook data convert`` after writing a dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvbook.data.projection import project_points_np
from mvbook.data.spec import (
    STRING_META,
    DatasetFormatError,
    array_file_problem,
    check_manifest,
    read_manifest,
    sha256_file,
)


@dataclass
class VerifyReport:
    """Result of :func:`verify_dataset`: ``ok`` and human-readable ``problems``/``info``."""

    root: Path
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    reprojection_max_px: float = float("nan")
    reprojection_mean_px: float = float("nan")

    def fail(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)

    def __str__(self) -> str:
        lines = [f"{self.root}: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        lines += [f"  - {p}" for p in self.problems]
        lines += [f"  {i}" for i in self.info]
        return "\n".join(lines)


def verify_dataset(
    root: str | os.PathLike,
    *,
    checksums: bool = True,
    reprojection: bool = True,
    tolerance_px: float = 1.0,
    max_samples: int | None = None,
    chunk: int = 512,
    raise_on_error: bool = False,
) -> VerifyReport:
    """Check a dataset folder: completeness, checksums and reprojection consistency.

    - every array listed in the manifest exists with the recorded shape and dtype, every
      required key is present, sizes agree with ``num_samples/views/persons/joints`` and
      ``image_size``, string ids are inside their vocabularies;
    - ``sha256`` of every file equals the manifest's (``checksums=True``);
    - joints3d projected with the stored cameras (``K, R, t, dist``) equal ``joints2d`` within
      ``tolerance_px`` for valid persons and joints in front of the camera; cameras are finite
      with orthonormal ``R``; boxes have ``x0 <= x1, y0 <= y1``.

    Args:
        max_samples: check reprojection on at most this many samples (evenly spaced).
        raise_on_error: raise ``DatasetFormatError`` with the report instead of returning it.
    """
    root = Path(root).expanduser()
    rep = VerifyReport(root)
    try:
        m = read_manifest(root, check=False)
    except DatasetFormatError as err:
        rep.fail(str(err))
        if raise_on_error:
            raise
        return rep
    bad_manifest = check_manifest(m)
    for problem in bad_manifest:
        rep.fail(f"{root / 'manifest.json'}: {problem}")
    if bad_manifest:
        rep.fail("the manifest is inconsistent: restore it or convert the dataset again "
                 "(mvbook data convert ... --overwrite)")
        if raise_on_error:
            raise DatasetFormatError(str(rep))
        return rep
    N, C, P, J = m["num_samples"], m["num_views"], m["num_persons"], m["num_joints"]
    W, H = m["image_size"]
    arrays = m["arrays"]
    present: dict[str, np.ndarray] = {}
    for key, entry in arrays.items():
        path = root / entry["file"]
        problem = array_file_problem(root, key, entry)
        if problem:
            rep.fail(f"{problem}; reconvert the dataset")
            continue
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            rep.fail(f"cannot read {path}: {err}")
            continue
        if checksums:
            if not entry.get("sha256"):
                rep.fail(f"the manifest records no sha256 for {path} ({key}), so it cannot be "
                         "verified; reconvert the dataset to record one")
            elif sha256_file(path) != entry["sha256"]:
                rep.fail(f"checksum mismatch for {path} (file changed or corrupted); reconvert")
        present[key] = arr
    for key in STRING_META:
        if key in present:
            ids = np.asarray(present[key])
            n = len(m["vocab"].get(key) or [])
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                rep.fail(f"{key} ids outside the vocabulary of {n} strings")
    if "image_size" in present:
        sz = np.asarray(present["image_size"])
        if not (sz == np.array([W, H])).all():
            rep.fail(f"image_size values differ from manifest image_size {[W, H]}")
    need = ("K", "R", "t", "dist", "joints3d", "joints2d", "person_valid", "bbox")
    if reprojection and all(k in present for k in need):
        sel = np.arange(N)
        if max_samples is not None and max_samples < N:
            sel = np.unique(np.linspace(0, N - 1, max_samples).round().astype(int))
        worst, total, count = 0.0, 0.0, 0
        bad_cam = bad_box = 0
        for s in range(0, len(sel), chunk):
            idx = sel[s : s + chunk]
            K = np.asarray(present["K"][idx], np.float64)
            R = np.asarray(present["R"][idx], np.float64)
            t = np.asarray(present["t"][idx], np.float64)
            d = np.asarray(present["dist"][idx], np.float64)
            X = np.asarray(present["joints3d"][idx], np.float64)  # (n,P,J,3)
            j2 = np.asarray(present["joints2d"][idx], np.float64)  # (n,C,P,J,2)
            pv = np.asarray(present["person_valid"][idx])
            cams_ok = (
                np.isfinite(K).all((-1, -2)) & np.isfinite(R).all((-1, -2)) & np.isfinite(t).all(-1)
            )
            RRt = np.einsum("...ij,...kj->...ik", R, R)
            cams_ok &= np.abs(RRt - np.eye(3)).max((-1, -2)) < 1e-3
            bad_cam += int((~cams_ok).sum())
            n = len(idx)
            uv, z = project_points_np(X.reshape(n, 1, P * J, 3), K, R, t, d)
            uv = uv.reshape(n, C, P, J, 2)
            z = z.reshape(n, C, P, J)
            mask = pv[:, None, :, None] & (z > 0) & np.isfinite(X).all(-1)[:, None]
            if "joints3d_valid" in present:
                mask &= np.asarray(present["joints3d_valid"][idx])[:, None]
            err = np.linalg.norm(uv - j2, axis=-1)
            err = np.where(mask, err, 0.0)
            err = np.where(np.isfinite(err), err, np.inf)
            if mask.any():
                worst = max(worst, float(err.max()))
                total += float(err[mask].sum())
                count += int(mask.sum())
            box = np.asarray(present["bbox"][idx])
            bad_box += int(((box[..., 2] < box[..., 0]) | (box[..., 3] < box[..., 1])).sum())
        if bad_cam:
            rep.fail(f"{bad_cam} camera(s) not finite or with non-orthonormal R")
        if bad_box:
            rep.fail(f"{bad_box} box(es) with x1 < x0 or y1 < y0")
        if count:
            rep.reprojection_max_px = worst
            rep.reprojection_mean_px = total / count
            rep.info.append(
                f"reprojection over {count} joints of {len(sel)} samples: mean "
                f"{rep.reprojection_mean_px:.3g} px, max {worst:.3g} px"
            )
            if worst > tolerance_px:
                rep.fail(
                    f"projected joints3d differ from joints2d by up to {worst:.3g} px "
                    f"(> {tolerance_px} px): cameras or joints inconsistent"
                )
        else:
            rep.info.append("no valid joints to check reprojection on")
    rep.info.append(
        f"dataset {m['dataset']!r}: {N} samples, {C} views {m['camera_names']}, {P} persons, "
        f"{J} joints ({m['skeleton']}), images {W}x{H}, subjects {m['vocab'].get('subject')}"
    )
    if raise_on_error and not rep.ok:
        raise DatasetFormatError(str(rep))
    return rep


__all__ = ["VerifyReport", "verify_dataset"]
