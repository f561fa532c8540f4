"""The networks of unsupervised 3D keypoint discovery (Honari et al., sec. 3 and Tab. S1-S2).

:class:`KeypointDiscovery` is the whole unsupervised model of Fig. 2:

1. the detector S (:class:`Detector`) sees the frame down-sampled and gives a box
   ``(s_x, s_y, u_x, u_y)``; the patch p is resampled from the box by a differentiable spatial
   transformer (:func:`mvbook.crops.crop_images`, bilinear ``grid_sample``);
2. the encoder E (:class:`Encoder`) gives Xi; the image decoder D (:class:`Decoder`) gives the
   RGB patch D_p and the mask M_p (eq. 1), pasted back into the frame by the inverse transformer
   (:func:`mvbook.crops.paste_crops`) and composited over the background (eq. 2);
3. the keypoint head psi (a :class:`Decoder` with N output maps) gives N heatmaps per view whose
   soft-argmax are the 2D keypoints (eqs. 3-4); the patch cameras (eq. 6,
   :meth:`mvbook.geometry.Camera.crop`) triangulate them by DLT (eq. 7,
   :func:`mvbook.geometry.triangulate`) and project them back into every patch (eq. 8);
4. the mask decoder phi (:class:`MaskDecoder`) renders a Gaussian per re-projected keypoint
   (:func:`mvbook.heatmaps.render_gaussian_2d`) and convolves them into the mask M~_p (eq. 9).

Also here: :class:`PoseMLP` (sec. 3.5: the 2-hidden-layer MLP from keypoints or features to the
labelled pose) and :class:`Lifter` (sec. 3.4, Tab. S2: one view's 2D keypoints to the discovered
3D keypoints).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mvbook.crops import crop_images, normalize_images, paste_crops
from mvbook.geometry import Camera, triangulate
from mvbook.heatmaps import gaussian_factors_2d, soft_argmax_2d

from .config import Config

__all__ = ["Detector", "Encoder", "Decoder", "MaskDecoder", "KeypointDiscovery", "project",
           "boxes_from_detection", "PoseMLP", "Lifter"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Detector(nn.Module):
    """S: the down-sampled frame to a box, ``forward(x (N, 3, h, w)) -> (N, 4)`` in [0, 1]^4.

    The outputs are sigmoids: the box centre ``(u_x, u_y)`` as a fraction of the frame and its
    side ``(w, h)`` as a position in ``config.box_range`` (see :func:`boxes_from_detection`). A
    small strided CNN stands in for the paper's ResNet-18. The last layer starts at zero, so
    training starts from the frame's centre with a side at the fraction ``init_side`` of
    ``box_range``.
    """

    def __init__(self, width: int, init_side: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv(3, width, 2), _conv(width, 2 * width, 2),
                                      _conv(2 * width, 4 * width, 2), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.out = nn.Linear(4 * width, 4)
        nn.init.zeros_(self.out.weight)
        side = torch.logit(torch.tensor(float(init_side)))
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([0.0, 0.0, float(side), float(side)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.features(x)))


def boxes_from_detection(detection: torch.Tensor, image_size: tuple[int, int],
                         box_range: tuple[float, float]) -> torch.Tensor:
    """The detector's ``(..., 4)`` sigmoids to boxes ``(..., 4) = (x0, y0, x1, y1)`` frame px.

    Centre ``u = det[:2] * (W, H) - 1/2`` (anywhere over the frame's extent), side
    ``w = (lo + (hi - lo) det[2:]) * (W, H)``; the paper's scales are ``s = S / w`` (patch px per
    frame px) and its top-left corner ``b = u - w / 2``.
    """
    size = detection.new_tensor([float(image_size[0]), float(image_size[1])])
    lo, hi = (float(v) for v in box_range)
    centre = detection[..., :2] * size - 0.5
    side = (lo + (hi - lo) * detection[..., 2:]) * size
    return torch.cat([centre - side / 2, centre + side / 2], dim=-1)


class Encoder(nn.Module):
    """E: a patch ``(N, 3, S, S)`` (network input, :func:`mvbook.crops.normalize_images`) to
    Xi ``(N, latent_dim)``; four stride-2 convolutions and a linear layer (a ResNet-50 in the
    paper)."""

    def __init__(self, patch_size: int, width: int, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv(3, width, 2), _conv(width, 2 * width, 2),
                                      _conv(2 * width, 4 * width, 2),
                                      _conv(4 * width, 4 * width, 2), nn.Flatten())
        self.out = nn.Linear(4 * width * (patch_size // 16) ** 2, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class Decoder(nn.Module):
    """Tab. S1: Xi ``(N, latent_dim)`` to ``(N, out_channels, S, S)`` maps.

    A linear layer with dropout and ReLU to ``channels x (S/8)^2``, three blocks of a 2x bilinear
    up-sampling and ``convs`` 3x3 convolutions with ReLU (halving the channels), and a 1x1
    convolution. The image decoder D has 4 outputs (RGB and mask), the keypoint head psi N.
    """

    def __init__(self, latent_dim: int, out_channels: int, patch_size: int, channels: int,
                 convs: int, dropout: float) -> None:
        super().__init__()
        self.side = patch_size // 8
        self.channels = channels
        self.linear = nn.Sequential(nn.Linear(latent_dim, channels * self.side ** 2),
                                    nn.Dropout(dropout), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        c = channels
        for _ in range(3):
            layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="bilinear",
                                                   align_corners=False)]
            for k in range(convs):
                layers += [nn.Conv2d(c if k == 0 else c // 2, c // 2, 3, 1, 1),
                           nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
            c //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, out_channels, 1)

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        x = self.linear(xi).view(-1, self.channels, self.side, self.side)
        return self.out(self.blocks(x))


class MaskDecoder(nn.Module):
    """phi (eq. 9, supplementary S.1.1): N Gaussian maps ``(M, N, S, S)`` to a mask
    ``(M, 1, S, S)`` in (0, 1): three 5x5 convolutions (N -> 1 -> 1 -> 1, padding 2). The
    paper gives no activations: LeakyReLU between the layers and a sigmoid at the end here.

    :meth:`from_points` gives the same mask from the keypoints without drawing the ``N`` maps:
    a Gaussian is separable, ``G_n = gy_n gx_n^T``, so the first convolution is
    ``sum_n Gy_n W_n Gx_n^T`` with ``Gy_n[v, a] = gy_n(v + a - 2)`` (the 5-tap windows of the
    zero-padded factors): ``O(N S (S + 25))`` products instead of ``O(25 N S^2)``.
    """

    def __init__(self, num_keypoints: int, sigma: float | None = None) -> None:
        super().__init__()
        self.first = nn.Conv2d(num_keypoints, 1, 5, 1, 2)
        self.rest = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv2d(1, 1, 5, 1, 2), nn.LeakyReLU(0.1),
                                  nn.Conv2d(1, 1, 5, 1, 2))
        if sigma is not None:
            self.init_blobs(sigma)

    @torch.no_grad()
    def init_blobs(self, sigma: float, alone: float = -2.0, empty: float = -4.0) -> None:
        """Start as a blob drawer: every keypoint's Gaussian summed over a 5x5 window, then two
        5x5 box averages, scaled so that a lone keypoint of width ``sigma`` (px) peaks at the
        logit ``alone`` and a patch without keypoints is at ``empty`` (a few overlapping
        keypoints make the mask). The paper states no initialisation; PyTorch's default one
        starts with a nearly constant mask whose sigmoid saturates towards the background,
        where the keypoints get almost no gradient."""
        conv2, conv3 = self.rest[1], self.rest[3]
        for conv in (self.first, conv2, conv3):
            conv.weight.fill_(1.0 if conv is self.first else 1.0 / 25)
            conv.bias.zero_()
        size = 33
        centre = torch.full((1, 1, 2), float(size // 2))
        one = torch.zeros(1, self.first.in_channels, 2)
        one[:, 0] = centre[:, 0]
        one[:, 1:] = float("nan")  # only keypoint 0 is drawn
        peak = float(self.rest(self.from_points_logits(one, size, sigma)).max())
        conv3.weight.mul_((alone - empty) / peak)
        conv3.bias.fill_(empty)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.rest(self.first(maps)))

    def from_points(self, points: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
        """The mask ``(M, 1, S, S)`` of keypoints ``(M, N, 2)`` (px of an ``S x S`` patch),
        equal to ``forward(render_gaussian_2d(points, (S, S), sigma))``."""
        return torch.sigmoid(self.rest(self.from_points_logits(points, size, sigma)))

    def from_points_logits(self, points: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
        """The first convolution's output ``(M, 1, S, S)`` on the keypoints' Gaussians."""
        gx, gy = gaussian_factors_2d(points, (size, size), sigma)  # (M, N, S) each
        k = self.first.kernel_size[0]
        pad = k // 2
        wy = F.pad(gy, (pad, pad)).unfold(-1, k, 1)  # (M, N, S, k): wy[v, a] = gy(v + a - pad)
        wx = F.pad(gx, (pad, pad)).unfold(-1, k, 1)
        t = torch.einsum("mnva,nab->mvnb", wy, self.first.weight[0])  # (M, S, N, k)
        out = torch.einsum("mvnb,mnub->mvu", t, wx) + self.first.bias
        return out[:, None]


def project(X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Eq. 8: world points ``X (..., N, 3)`` through ``P (..., C, 3, 4)`` to ``(..., C, N, 2)``
    pixels (differentiable in both)."""
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)  # (..., N, 4)
    x = torch.einsum("...cij,...nj->...cni", P, Xh)
    return x[..., :2] / x[..., 2:]


class KeypointDiscovery(nn.Module):
    """The unsupervised model (S, E, D, psi, phi) on calibrated multiview frames.

    ``forward(images, K, R, t, background, keypoints=True) -> dict``:

    - ``images (B, C, 3, H, W)`` in [0, 1]; ``K (B, C, 3, 3)``, ``R (B, C, 3, 3)``,
      ``t (B, C, 3)`` the frames' pinhole cameras (world mm); ``background (B or 1, C, 3, H, W)``
      in [0, 1].
    - returns ``boxes (B, C, 4)`` frame px; ``centre (B, C, 2)`` the boxes' centres u;
      ``patch (B, C, 3, S, S)`` the input patches; ``latent (B, C, D)`` Xi; ``rgb`` and ``mask``
      ``(B, C, 3 or 1, S, S)`` D_p and M_p; ``frame_mask (B, C, 1, H, W)`` M;
      ``reconstruction (B, C, 3, H, W)`` I~ (eq. 2); with ``keypoints``: ``heatmaps`` logits
      ``(B, C, N, S, S)``, ``keypoints2d (B, C, N, 2)`` x (patch px, eq. 4), ``P`` the patch
      projections ``(B, C, 3, 4)`` (eq. 6), ``keypoints3d (B, N, 3)`` X (world mm, eq. 7),
      ``reprojected (B, C, N, 2)`` x^ (patch px, eq. 8), ``reprojected_frame (B, C, N, 2)`` x^ in
      frame px and ``keypoint_mask (B, C, 1, S, S)`` M~_p (eq. 9, from the keypoints' Gaussians,
      :meth:`MaskDecoder.from_points`).
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.detector = Detector(c.width, init_side=0.5)
        self.encoder = Encoder(c.patch_size, c.width, c.latent_dim)
        self.decoder = Decoder(c.latent_dim, 4, c.patch_size, c.decoder_channels, c.decoder_convs,
                               c.dropout)
        self.keypoint_head = Decoder(c.latent_dim, c.num_keypoints, c.patch_size,
                                     c.decoder_channels, c.decoder_convs, c.dropout)
        self.mask_decoder = MaskDecoder(c.num_keypoints, sigma=c.heatmap_sigma * c.patch_size)

    @property
    def sigma_px(self) -> float:
        """The Gaussians' standard deviation in patch px."""
        return self.config.heatmap_sigma * self.config.patch_size

    def detect(self, images: torch.Tensor) -> torch.Tensor:
        """Boxes ``(N, 4)`` of frames ``(N, 3, H, W)`` in [0, 1]."""
        small = F.avg_pool2d(images, self.config.detector_stride)
        det = self.detector(normalize_images(small * 255.0))
        H, W = images.shape[-2:]
        return boxes_from_detection(det, (W, H), self.config.box_range)

    def forward(self, images: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                background: torch.Tensor, keypoints: bool = True) -> dict[str, Any]:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, C, 3, H, W), got {tuple(images.shape)}")
        B, C, _, H, W = images.shape
        S = self.config.patch_size
        flat = images.flatten(0, 1)
        boxes = self.detect(flat)  # (B*C, 4)
        patch = crop_images(flat, boxes, S)
        latent = self.encoder(normalize_images(patch * 255.0))
        dec = self.decoder(latent)
        rgb, mask = torch.sigmoid(dec[:, :3]), torch.sigmoid(dec[:, 3:])
        pasted = paste_crops(torch.cat([rgb, mask], dim=1), boxes, (W, H))
        frame_rgb, frame_mask = pasted[:, :3], pasted[:, 3:]
        bg = background.expand(B, C, 3, H, W).flatten(0, 1)
        recon = frame_mask * frame_rgb + (1 - frame_mask) * bg  # eq. 2
        out: dict[str, Any] = {
            "boxes": boxes.view(B, C, 4),
            "centre": ((boxes[:, :2] + boxes[:, 2:]) / 2).view(B, C, 2),
            "patch": patch.view(B, C, 3, S, S),
            "latent": latent.view(B, C, -1),
            "rgb": rgb.view(B, C, 3, S, S),
            "mask": mask.view(B, C, 1, S, S),
            "frame_mask": frame_mask.view(B, C, 1, H, W),
            "reconstruction": recon.view(B, C, 3, H, W),
        }
        if keypoints:
            out.update(self.discover(latent.view(B, C, -1), boxes.view(B, C, 4), K, R, t))
        return out

    def discover(self, latent: torch.Tensor, boxes: torch.Tensor, K: torch.Tensor,
                 R: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eqs. 3-9 from Xi ``(B, C, D)`` and the boxes ``(B, C, 4)``."""
        B, C, _ = latent.shape
        S, N = self.config.patch_size, self.config.num_keypoints
        heat = self.keypoint_head(latent.flatten(0, 1)).view(B, C, N, S, S)
        x = soft_argmax_2d(heat, beta=1.0)  # eq. 4: a plain softmax per channel
        cams = Camera(K, R, t)
        P = cams.crop(boxes, (S, S)).P.to(x.dtype)  # eq. 6
        X = triangulate(x, P)  # eq. 7, (B, N, 3)
        x_hat = project(X, P)  # eq. 8
        x_frame = project(X, cams.P.to(x.dtype))
        m = self.mask_decoder.from_points(x_hat.flatten(0, 1), S, self.sigma_px)  # eq. 9
        return {"heatmaps": heat, "keypoints2d": x, "P": P, "keypoints3d": X,
                "reprojected": x_hat, "reprojected_frame": x_frame,
                "keypoint_mask": m.view(B, C, 1, S, S)}


class PoseMLP(nn.Module):
    """Sec. 3.5 / S.1.2: inputs ``(B, F)`` to poses ``(B, 3 J)`` through two hidden layers of
    ``hidden`` units, each followed by ReLU and dropout."""

    def __init__(self, in_features: int, out_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Lifter(nn.Module):
    """Tab. S2: one view's 2D keypoints ``(B, 2 K)`` to 3D keypoints ``(B, 3 K)``: a linear
    layer to ``hidden``, three residual blocks (linear, ReLU, linear, ReLU) and a linear
    layer."""

    def __init__(self, num_keypoints: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * num_keypoints, hidden),
                                 *(_Residual(hidden) for _ in range(3)),
                                 nn.Linear(hidden, 3 * num_keypoints))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
