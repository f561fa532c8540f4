"""A V2V-style 3D convolutional encoder-decoder (Moon et al. 2018), as used by Iskakov et al. 2019.

Front layers (a 7x7x7 convolution, residual blocks), an hourglass of ``levels`` max-pool /
residual-block stages with residual skip connections and transposed-convolution upsampling,
back layers of 1x1x1 convolutions, and a 1x1x1 output layer.

``forward(volumes (B, in_channels, D, H, W)) -> (B, out_channels, D, H, W)``; ``D, H, W`` must
be divisible by ``2**levels``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Res3DBlock", "V2VNet"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class Basic3DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, norm: str = "batch") -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(cin, cout, kernel, 1, kernel // 2), _norm(norm, cout), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Res3DBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual (identity or 1x1x1) connection."""

    def __init__(self, cin: int, cout: int, norm: str = "batch") -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv3d(cin, cout, 3, 1, 1),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, 1, 1),
            _norm(norm, cout),
        )
        self.skip: nn.Module = nn.Identity()
        if cin != cout:
            self.skip = nn.Sequential(nn.Conv3d(cin, cout, 1), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.res(x) + self.skip(x))


class V2VNet(nn.Module):
    """V2V-style volumetric network.

    - ``in_channels``: channels of the aggregated volume (``K`` in the paper).
    - ``out_channels``: one 3D heatmap per joint (``J``).
    - ``width``: channels after the front layers; level ``l`` of the hourglass has
      ``width * 2**l`` channels (capped by ``max_width``).
    - ``levels``: number of pooling stages (the original V2V uses 5 with 64^3 inputs).
    - ``norm``: ``"batch"`` (as V2V) or ``"group"`` (stable for batch size 1).
    - ``front_kernel``: kernel of the first convolution (7 in V2V; 3 is much cheaper on a CPU).
    - ``layout``: ``"compact"`` (front: the first convolution to ``width`` and one residual
      block; decoder: upsample, add the skip, then a residual block; back: two 1x1x1 blocks) or
      ``"authors"``, the V2V of Iskakov et al.'s code (front: the first convolution to
      ``width // 2`` and three residual blocks to ``width``; decoder: a residual block at the
      coarse level, then upsample and add the skip; back: a residual block and two 1x1x1
      blocks). With ``width=32, levels=5`` the latter is their network (32..128 channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 16,
        levels: int = 2,
        max_width: int = 128,
        norm: str = "batch",
        front_kernel: int = 7,
        layout: str = "compact",
    ) -> None:
        super().__init__()
        if front_kernel < 1 or front_kernel % 2 == 0:
            raise ValueError(f"front_kernel must be a positive odd int, got {front_kernel}")
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        if layout not in ("compact", "authors"):
            raise ValueError(f"layout must be 'compact' or 'authors', got {layout!r}")
        self.levels = levels
        self.layout = layout
        if layout == "authors":
            first = max(1, width // 2)
            self.front = nn.Sequential(
                Basic3DBlock(in_channels, first, front_kernel, norm),
                Res3DBlock(first, width, norm),
                Res3DBlock(width, width, norm),
                Res3DBlock(width, width, norm),
            )
        else:
            self.front = nn.Sequential(
                Basic3DBlock(in_channels, width, front_kernel, norm),
                Res3DBlock(width, width, norm),
            )
        chans = [min(width * 2**i, max_width) for i in range(levels + 1)]
        self.down = nn.ModuleList(
            [Res3DBlock(chans[i], chans[i + 1], norm) for i in range(levels)]
        )
        self.skips = nn.ModuleList([Res3DBlock(chans[i], chans[i], norm) for i in range(levels)])
        self.mid = Res3DBlock(chans[-1], chans[-1], norm)
        self.up = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose3d(chans[i + 1], chans[i], 2, 2),
                    _norm(norm, chans[i]),
                    nn.ReLU(inplace=True),
                )
                for i in range(levels)
            ]
        )
        # compact: the residual block after merging, at level i; authors: before upsampling, at i + 1
        res_chans = chans[:-1] if layout == "compact" else chans[1:]
        self.up_res = nn.ModuleList([Res3DBlock(c, c, norm) for c in res_chans])
        back: list[nn.Module] = [Res3DBlock(width, width, norm)] if layout == "authors" else []
        self.back = nn.Sequential(
            *back,
            Basic3DBlock(width, width, 1, norm),
            Basic3DBlock(width, width, 1, norm),
        )
        self.output = nn.Conv3d(width, out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        if volumes.ndim != 5:
            raise ValueError(f"volumes must have shape (B, C, D, H, W), got {tuple(volumes.shape)}")
        m = 2**self.levels
        if any(s % m for s in volumes.shape[-3:]):
            raise ValueError(
                f"volume sides {tuple(volumes.shape[-3:])} must be divisible by 2**levels = {m}"
            )
        x = self.front(volumes)
        skips = []
        for i in range(self.levels):
            skips.append(self.skips[i](x))
            x = self.down[i](nn.functional.max_pool3d(x, 2))
        x = self.mid(x)
        for i in reversed(range(self.levels)):
            if self.layout == "compact":
                x = self.up_res[i](self.up[i](x) + skips[i])
            else:
                x = self.up[i](self.up_res[i](x)) + skips[i]
        return self.output(self.back(x))
