"""The two learnable triangulation networks (Iskakov et al. 2019).

- :class:`AlgebraicTriangulationNet` (eqs. 1-5): soft-argmax 2D joints, confidences ``w_{c,j}``
  from ``q_phi``, confidence-weighted DLT solved by SVD (:func:`mvbook.geometry.triangulate`).
- :class:`VolumetricTriangulationNet` (eqs. 6-14): ``1 x 1``-convolved maps unprojected into a
  cube around the pelvis (:func:`mvbook.volumetric.unproject`), aggregated over views, refined
  by V2V into 3D heatmaps, read out by 3D soft-argmax.

Both wrap a 2D :class:`mvbook.nn.SimpleBaseline`; with ``config.freeze_backbone`` they accept
its cached outputs (:func:`~mvbook.methods.learnable_triangulation.data.cache_backbone`).
Units: mm in 3D, crop pixels in 2D.
"""

from __future__ import annotations

import torch
from torch import nn

from mvbook.crops import heatmap_to_crop, normalize_images
from mvbook.geometry import triangulate
from mvbook.heatmaps import soft_argmax_2d, soft_argmax_3d
from mvbook.nn.backbones import BackboneOutput, ConfidenceHead, SimpleBaseline
from mvbook.nn.v2v import V2VNet
from mvbook.validation import check_shape
from mvbook.volumetric import aggregate, make_grid, unproject

from .config import Config

__all__ = ["AlgebraicTriangulationNet", "VolumetricTriangulationNet"]


class _TriangulationBase(nn.Module):
    def __init__(self, backbone: SimpleBaseline, config: Config) -> None:
        super().__init__()
        if not isinstance(backbone, SimpleBaseline):
            raise TypeError(f"backbone must be a SimpleBaseline, got {type(backbone).__name__}")
        self.backbone = backbone
        self.config = config
        if config.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):  # noqa: D102 - keep a frozen backbone in eval mode
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def _backbone(self, images: torch.Tensor, cached: BackboneOutput | None = None):
        check_shape(images, "images", "(B, C, 3, S, S)")
        B, C = images.shape[:2]
        if cached is not None:
            if not self.config.freeze_backbone:
                raise ValueError(
                    "cached backbone outputs can only be used with config.freeze_backbone=True"
                )
            out = BackboneOutput(*(t.flatten(0, 1).float() for t in cached))
            return out, B, C
        x = images if images.is_floating_point() else normalize_images(images)
        out = self.backbone(x.flatten(0, 1))
        return out, B, C


class AlgebraicTriangulationNet(_TriangulationBase):
    """Algebraic triangulation with learned confidences (Iskakov et al. eqs. 1-5).

    ``forward(images (B, C, 3, S, S), P (B, C, 3, 4)) -> dict`` with ``joints3d (B, J, 3)`` mm,
    ``joints2d (B, C, J, 2)`` crop px (soft-argmax), ``confidences (B, C, J)`` (``w_{c,j}``,
    normalised to sum 1 over views, plus 1e-5 as in the original implementation) and
    ``heatmaps (B, C, J, h, w)``. Images may be uint8 (normalised here) or already normalised.
    ``cached``: backbone outputs ``(B, C, ...)`` computed beforehand (:func:`~mvbook.methods.learnable_triangulation.data.cache_backbone`),
    allowed with a frozen backbone only.
    With ``config.use_confidences=False`` all weights are 1 (the "w/o conf" ablation).
    """

    def __init__(self, backbone: SimpleBaseline, config: Config) -> None:
        super().__init__(backbone, config)
        self.confidence = ConfidenceHead(
            backbone.encoding_channels, backbone.num_joints, config.confidence_hidden
        )

    def forward(
        self, images: torch.Tensor, P: torch.Tensor, cached: BackboneOutput | None = None
    ) -> dict[str, torch.Tensor]:
        out, B, C = self._backbone(images, cached)
        heat = out.heatmaps.unflatten(0, (B, C))
        hs = heat.shape[-1]
        with torch.autocast(device_type=heat.device.type, enabled=False):
            uv_h = soft_argmax_2d(heat.float(), beta=self.config.alpha)
            uv = heatmap_to_crop(uv_h, hs, images.shape[-1])
            if self.config.use_confidences:
                w = self.confidence(out.encoding).float().unflatten(0, (B, C))  # (B, C, J)
                w = w / w.sum(dim=1, keepdim=True) + 1e-5
            else:
                w = torch.ones(B, C, heat.shape[2], device=heat.device)
            X = triangulate(uv, P.float(), weights=w)
        return {"joints3d": X, "joints2d": uv, "confidences": w, "heatmaps": heat}


class VolumetricTriangulationNet(_TriangulationBase):
    """Volumetric triangulation (Iskakov et al. eqs. 6-14).

    ``forward(images (B, C, 3, S, S), P (B, C, 3, 4), root (B, 3) mm, yaw (B,) rad or None)
    -> dict`` with ``joints3d (B, J, 3)`` mm, ``volumes (B, J, R, R, R)`` (3D heatmaps
    ``V^output`` before the softmax), ``grid (B, R, R, R, 3)`` mm and, for ``"conf"``
    aggregation, ``confidences (B, C)`` (``d_c``). ``cached`` as in
    :class:`AlgebraicTriangulationNet`.
    """

    def __init__(self, backbone: SimpleBaseline, config: Config) -> None:
        super().__init__(backbone, config)
        K = config.volume_channels
        self.process = nn.Conv2d(backbone.feature_channels, K, 1)  # o_gamma, eq. 6
        self.confidence = (
            ConfidenceHead(backbone.encoding_channels, 1, config.confidence_hidden)
            if config.aggregation == "conf"
            else None
        )
        self.v2v = V2VNet(
            K,
            backbone.num_joints,
            config.v2v_width,
            config.v2v_levels,
            norm=config.v2v_norm,
            front_kernel=config.v2v_front_kernel,
            layout=config.v2v_layout,
        )

    def forward(
        self,
        images: torch.Tensor,
        P: torch.Tensor,
        root: torch.Tensor,
        yaw: torch.Tensor | None = None,
        cached: BackboneOutput | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        out, B, C = self._backbone(images, cached)
        check_shape(root, "root", f"({B}, 3)")
        M = self.process(out.features).unflatten(0, (B, C))  # (B, C, K, h, w)
        grid = make_grid(root.float(), cfg.volume_size, cfg.volume_resolution, yaw)
        S = images.shape[-1]
        vols, valid = unproject(M, P, grid, (S, S))  # projected and sampled in float32
        d = None
        if cfg.aggregation == "conf":
            assert self.confidence is not None
            d = self.confidence(out.encoding).unflatten(0, (B, C))[..., 0]  # (B, C)
        agg = aggregate(vols, cfg.aggregation, d, valid if cfg.use_valid_mask else None)
        V = self.v2v(agg)  # (B, J, R, R, R)
        with torch.autocast(device_type=V.device.type, enabled=False):
            X = soft_argmax_3d(V.float() * cfg.volume_beta, grid.float(), beta=1.0)
        result = {"joints3d": X, "volumes": V, "grid": grid}
        if d is not None:
            result["confidences"] = d
        return result

