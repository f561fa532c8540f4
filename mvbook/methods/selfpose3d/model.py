"""SelfPose3d's networks: VoxelPose's structure, unchanged (sec. 3.1), plus the attention network.

- ``heatmap_net_2d``: a :class:`mvbook.nn.SimpleBaseline` on whole views giving ``J + 1``
  heatmaps (the joints, then the root) at the backbone's output stride.
- ``root_net``: a V2V network (:class:`mvbook.nn.V2VNet`) from the root feature volume
  ``F_root`` (the root heatmaps unprojected into the space box and averaged over the views,
  eq. 1) to the root volume ``G`` (``F_root + V2V(F_root)`` with ``config.residual``);
  proposals by 3D NMS (:func:`~.space.nms_3d`).
- ``pose_net_3d``: a V2V network from each proposal's cuboid of the ``J`` joint heatmaps to
  ``J`` volumes, read out by 3D soft-argmax (:func:`mvbook.heatmaps.soft_argmax_3d`).
- ``attn_net_2d`` (sec. 3.5): a lighter SimpleBaseline on the (augmented) images giving
  attention heatmaps ``A`` of the heatmaps' size, ``A = 2 sigmoid(z)`` (positive, 1 at ``z = 0``;
  the paper does not say how ``A`` is kept non-negative).

Units: mm in 3D; 2D maps cover images of ``image_size = (W, H)`` px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mvbook.crops import normalize_images
from mvbook.heatmaps import soft_argmax_3d
from mvbook.nn.backbones import SimpleBaseline
from mvbook.nn.v2v import V2VNet
from mvbook.validation import check_shape
from mvbook.volumetric import make_grid

from .config import Config
from .space import nms_3d, space_grid, view_average

__all__ = ["AttentionNet", "SelfPose3dNet", "space_center_from_cameras"]


def space_center_from_cameras(P: torch.Tensor, height: float) -> tuple[float, float, float]:
    """The centre of the space box without 3D labels: the point nearest (least squares) to all
    cameras' optical axes, moved to ``height`` mm (``P``: ``(C, 3, 4)``)."""
    check_shape(P, "P", "(C, 3, 4)")
    P = P.double()
    M, p4 = P[:, :, :3], P[:, :, 3]
    centre = -torch.linalg.solve(M, p4[..., None])[..., 0]  # (C, 3) camera centres
    axis = torch.nn.functional.normalize(M[:, 2], dim=-1)  # the principal ray direction
    proj = torch.eye(3, dtype=P.dtype) - axis[:, :, None] * axis[:, None, :]
    A, b = proj.sum(0), (proj @ centre[..., None]).sum(0)[:, 0]
    x = torch.linalg.solve(A, b)
    return float(x[0]), float(x[1]), float(height)


class AttentionNet(nn.Module):
    """``attn_net_2d``: images ``(N, 3, H, W)`` (normalised) -> attention maps ``(N, J, h, w)``
    in ``(0, 2)``, equal to 1 at initialisation (the last layer starts at zero)."""

    def __init__(self, num_joints: int, config) -> None:
        super().__init__()
        self.net = SimpleBaseline(num_joints, config)
        nn.init.zeros_(self.net.final.weight)
        nn.init.zeros_(self.net.final.bias)

    def forward(self, images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        z = self.net(images).heatmaps
        if tuple(z.shape[-2:]) != (size[1], size[0]):
            z = nn.functional.interpolate(z, size=(size[1], size[0]), mode="bilinear",
                                          align_corners=False)
        return 2 * torch.sigmoid(z)


class SelfPose3dNet(nn.Module):
    """The whole model: ``backbone`` (``heatmap_net_2d``), ``root_net``, ``pose_net``,
    ``attention`` (None unless ``config.soft_attention``), and the space grid (a buffer).

    Args:
        config: the :class:`~.config.Config`.
        image_size: ``(W, H)`` of the views.
        space_center: ``(x, y, z)`` mm (see :func:`space_center_from_cameras`).

    ``forward(images (B, C, 3, H, W), P (B, C, 3, 4)) -> dict`` (inference, sec. 3.6):
    ``heatmaps (B, C, J + 1, h, w)``, ``root_volume (B, D, H, W)``, ``roots (B, K, 3)`` mm,
    ``scores (B, K)``, ``valid (B, K)`` bool and ``poses (B, K, J, 3)`` mm (NaN where not
    valid). ``heatmaps`` may be passed instead of images (a frozen 2D network's cache).
    """

    def __init__(self, config: Config, image_size: Sequence[int],
                 space_center: Sequence[float]) -> None:
        super().__init__()
        self.config = config
        self.image_size = (int(image_size[0]), int(image_size[1]))
        J = config.num_joints
        self.backbone = SimpleBaseline(J + 1, config.backbone)
        self.root_net = V2VNet(1, 1, config.root_width, config.root_levels, norm=config.v2v_norm,
                               front_kernel=3)
        self.pose_net = V2VNet(J, J, config.pose_width, config.pose_levels,
                               norm=config.v2v_norm, front_kernel=3)
        for net in (self.root_net, self.pose_net):
            if config.residual:  # a correction of the input volume, zero at the start
                nn.init.zeros_(net.output.weight)
                nn.init.zeros_(net.output.bias)
            # channels-last 3D convolutions: the V2V forward + backward is faster on CPU
            # (bench/bench_selfpose3d.py prints the ratio)
            net.to(memory_format=torch.channels_last_3d)
        self.attention = (AttentionNet(J, config.attention_backbone)
                          if config.soft_attention and config.supervision == "self" else None)
        self.space_center = tuple(float(v) for v in space_center)
        self.register_buffer("grid", space_grid(self.space_center, config.space_size,
                                                config.space_shape), persistent=False)
        stride = config.backbone.output_stride
        if self.image_size[0] % stride or self.image_size[1] % stride:
            raise ValueError(f"image_size {self.image_size} must be divisible by the 2D "
                             f"network's output stride {stride}")
        self.heatmap_size = (self.image_size[0] // stride, self.image_size[1] // stride)
        bb = config.backbone
        self._pad_to = bb.stem_stride * 2 ** (len(bb.blocks) - 1)

    # ------------------------------------------------------------------------------- parts
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """``(..., 3, H, W)`` uint8 or normalised float -> ``(..., J + 1, h, w)``."""
        check_shape(images, "images", "(..., 3, H, W)")
        x = images if images.is_floating_point() else normalize_images(images)
        x = x.reshape(-1, *x.shape[-3:])
        H, W = x.shape[-2:]
        m = self._pad_to  # pad bottom/right to the encoder's stride (pixel coordinates unchanged)
        x = torch.nn.functional.pad(x, (0, -W % m, 0, -H % m))
        w, h = self.heatmap_size
        out = self.backbone(x).heatmaps[..., :h, :w]
        return out.reshape(*images.shape[:-3], *out.shape[-3:])

    def root_volume(self, root_heatmaps: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """``G``: root heatmaps ``(B, C, 1, h, w)`` and cameras ``(B, C, 3, 4)`` (through the
        augmentation, ``T P``) -> ``(B, D, H, W)`` (eq. 1, then ``root_net``)."""
        check_shape(root_heatmaps, "root_heatmaps", "(B, C, 1, h, w)")
        F_root = view_average(root_heatmaps.float(), P, self.grid, self.image_size)
        G = self.root_net(F_root.contiguous(memory_format=torch.channels_last_3d))
        return (G + F_root if self.config.residual else G)[:, 0]

    def propose(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """3D NMS of root volumes ``(B, D, H, W)``: ``roots (B, K, 3)``, ``scores``, ``valid``."""
        return nms_3d(volume.detach(), self.grid, self.config.max_people,
                      self.config.root_threshold)

    def pose(self, heatmaps: torch.Tensor, P: torch.Tensor, roots: torch.Tensor) -> torch.Tensor:
        """3D poses of proposals: joint heatmaps ``(N, C, J, h, w)`` of each proposal's frame,
        cameras ``(N, C, 3, 4)``, roots ``(N, 3)`` mm -> ``(N, J, 3)`` mm (a cuboid around each
        root, eq. 1, ``pose_net_3d``, soft-argmax)."""
        cfg = self.config
        check_shape(heatmaps, "heatmaps", f"(N, C, {cfg.num_joints}, h, w)")
        N = heatmaps.shape[0]
        check_shape(roots, "roots", f"({N}, 3)")
        grid = make_grid(roots.float(), cfg.cuboid_size, cfg.cuboid_resolution)
        vol = view_average(heatmaps.float(), P, grid, self.image_size)
        out = self.pose_net(vol.contiguous(memory_format=torch.channels_last_3d))
        if cfg.residual:
            out = out + vol
        return soft_argmax_3d(out.float() * cfg.pose_beta, grid)

    # ----------------------------------------------------------------------------- inference
    def forward(self, images: torch.Tensor | None, P: torch.Tensor,
                heatmaps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if heatmaps is None:
            if images is None:
                raise ValueError("pass images or heatmaps")
            heatmaps = self.heatmaps(images)
        check_shape(heatmaps, "heatmaps", "(B, C, K, h, w)")
        B = heatmaps.shape[0]
        J = self.config.num_joints
        G = self.root_volume(heatmaps[:, :, J:J + 1], P)
        roots, scores, valid = self.propose(G)
        K = roots.shape[1]
        poses = torch.full((B, K, J, 3), float("nan"), device=roots.device)
        b, k = valid.nonzero(as_tuple=True)
        if len(b):
            poses[b, k] = self.pose(heatmaps[b, :, :J], P[b], roots[b, k]).to(poses)
        return {"heatmaps": heatmaps, "root_volume": G, "roots": roots, "scores": scores,
                "valid": valid, "poses": poses}
