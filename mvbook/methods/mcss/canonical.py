"""The canonical pose of MCSS (Mitra et al. 2020, sec. 3.2.1, eq. 3).

Synchronised views of one instant share one *global* (MoCap) pose, but a global pose turned
about the vertical looks the same from a camera turned with it: regressing the global pose from
a view-invariant embedding is a one-to-many mapping. The canonical pose removes that rotation:
the root-centred pose is rotated about the vertical (the studio's +z, as Human3.6M's) until the
pelvis-to-left-hip bone lies in the x-z plane, pointing along +x.

Eq. 3 writes the angle as ``theta = arccos(u_xy . i)``, which is the *magnitude* of the turn;
its sign is that of ``u_y`` (a bone pointing to -y must turn the other way). With the signed
angle ``phi = atan2(u_y, u_x)`` the rotation is ``R_z(-phi)`` and its inverse ``R_z(phi)`` is
exact (:func:`from_canonical`).
"""

from __future__ import annotations

import torch

from mvbook.validation import check_index, check_shape

from .config import LEFT_HIP, ROOT_JOINT

__all__ = ["rotation_z", "canonical_angle", "to_canonical", "from_canonical", "root_relative"]


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` by ``angle (...,)`` radians about +z (counter-clockwise seen
    from above: x turns towards y)."""
    angle = torch.as_tensor(angle)
    c, s = torch.cos(angle), torch.sin(angle)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*angle.shape, 3, 3)


def canonical_angle(joints: torch.Tensor, root: int = ROOT_JOINT,
                    left_hip: int = LEFT_HIP) -> torch.Tensor:
    """The signed heading ``phi (...,)`` (radians, in (-pi, pi]) of the root-to-left-hip bone
    of ``joints (..., J, 3)`` in the horizontal plane: ``atan2(u_y, u_x)``.

    Degenerate case: a vertical bone (zero horizontal part) has no heading; ``atan2(0, 0) = 0``
    is returned (no rotation).
    """
    check_shape(joints, "joints", "(..., J, 3)")
    J = joints.shape[-2]
    root = check_index(root, "root", J)
    left_hip = check_index(left_hip, "left_hip", J)
    u = joints[..., left_hip, :] - joints[..., root, :]
    return torch.atan2(u[..., 1], u[..., 0])


def root_relative(joints: torch.Tensor, root: int = ROOT_JOINT) -> torch.Tensor:
    """``joints (..., J, 3)`` minus their root joint (the *global* representation)."""
    check_shape(joints, "joints", "(..., J, 3)")
    root = check_index(root, "root", joints.shape[-2])
    return joints - joints[..., root : root + 1, :]


def to_canonical(joints: torch.Tensor, root: int = ROOT_JOINT, left_hip: int = LEFT_HIP
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Global poses ``(..., J, 3)`` (z up, mm) to canonical poses (eq. 3).

    Returns ``(canonical (..., J, 3), R (..., 3, 3))`` with
    ``canonical_j = R (X_j - X_root)`` and ``R = R_z(-phi)``, :func:`canonical_angle`: the root
    is at the origin and the root-to-left-hip bone has y = 0 and x >= 0. The canonical pose
    does not change when the global pose is turned about the vertical or moved.
    """
    R = rotation_z(-canonical_angle(joints, root, left_hip))
    rel = root_relative(joints, root)
    return rel @ R.transpose(-1, -2), R


def from_canonical(canonical: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`to_canonical`: root-relative global poses
    ``R^T canonical_j`` from ``canonical (..., J, 3)`` and the rotations ``R (..., 3, 3)``."""
    check_shape(canonical, "canonical", "(..., J, 3)")
    check_shape(R, "R", "(..., 3, 3)")
    return canonical @ R
