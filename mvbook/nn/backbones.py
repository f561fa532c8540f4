"""Small 2D backbones of the "simple baselines" shape (Xiao et al. 2018).

A ResNet-style encoder ``g`` (stem + stages of basic residual blocks), a stack of transposed
convolutions producing intermediate maps ``f`` and a 1x1 convolution producing one heatmap per
joint ``h`` -- the exact split that Iskakov et al. 2019 use (``g_theta``, ``f_theta``, ``h_theta``).
Width, depth and the number of upsampling layers are configurable so the same class trains on a
CPU in seconds (width 16, three stages) and scales to a ResNet-like size on a GPU.

Shapes: images ``(N, 3, S, S)`` float; heatmaps ``(N, J, S / stride, S / stride)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "BottleneckConfig",
    "resnet18_like",
    "resnet_config",
    "BasicBlock",
    "Bottleneck",
    "ConfidenceHead",
    "SimpleBaseline",
]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """A residual block's shortcut: identity, or a strided 1x1 convolution with batch norm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and an identity/1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (ResNet-50/101/152): 1x1 reduce, 3x3 (carrying the stride), 1x1
    expand to ``4 * planes``, batch norm after each, identity/1x1 shortcut -- the block of the
    "simple baselines" pose networks (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut(x))


@dataclass
class BackboneConfig:
    """Size of a :class:`SimpleBaseline`.

    - ``width``: channels of the first stage; each further stage doubles them.
    - ``blocks``: number of basic blocks per stage; the first stage keeps the resolution of
      the stem, each further stage halves it.
    - ``stem_stride``: stride of the 7x7 stem (2 for small crops, 4 = conv + max-pool as ResNet).
    - ``deconv_layers`` / ``deconv_channels``: transposed 4x4 convolutions (each doubles the
      resolution) producing the intermediate maps ``f``.
    """

    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1)
    stem_stride: int = 2
    deconv_layers: int = 2
    deconv_channels: int = 32

    #: channels of a stage's output per channel of its width (1: basic blocks)
    expansion = 1

    @property
    def output_stride(self) -> int:
        return self.stem_stride * 2 ** (len(self.blocks) - 1) // 2**self.deconv_layers


@dataclass
class BottleneckConfig(BackboneConfig):
    """A :class:`BackboneConfig` of :class:`Bottleneck` blocks: stage ``i`` has
    ``width * 2**i`` inner channels and ``4 * width * 2**i`` output channels."""

    expansion = 4


#: blocks per stage of the ResNets of He et al. 2016 (18/34: basic blocks; 50/101/152: bottleneck)
RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3)}


def resnet_config(depth: int, deconv_channels: int = 256) -> BackboneConfig:
    """The "simple baselines" network of Xiao et al. 2018 on a ResNet-``depth`` encoder (width 64,
    stride-4 stem, basic blocks for 18/34, bottleneck blocks for 50/101/152) with three 4x4
    transposed convolutions of ``deconv_channels`` (256 in the paper): output stride 4. This is
    the layout of the published SimpleBaselines and learnable-triangulation 2D checkpoints
    (:func:`mvbook.nn.checkpoints.load_simple_baselines`)."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(RESNET_BLOCKS)}, got {depth!r}")
    kind = BackboneConfig if depth < 50 else BottleneckConfig
    return kind(width=64, blocks=RESNET_BLOCKS[depth], stem_stride=4, deconv_layers=3,
                deconv_channels=deconv_channels)


def resnet18_like() -> BackboneConfig:
    """The full profiles' backbone (a new config each call): four stages of two basic blocks
    from width 64 (a ResNet-18 encoder), a stride-4 stem and three transposed convolutions of
    128 channels (output stride 4)."""
    return BackboneConfig(width=64, blocks=(2, 2, 2, 2), stem_stride=4, deconv_layers=3,
                          deconv_channels=128)


class BackboneOutput(NamedTuple):
    """Outputs of :class:`SimpleBaseline` for ``N`` images of size ``S``.

    ``heatmaps`` ``(N, J, h, w)`` (``h_theta``), ``features`` ``(N, deconv_channels, h, w)``
    (intermediate maps ``f_theta``), ``encoding`` ``(N, width * 2**(stages-1), h', w')``
    (encoder output ``g_theta``).
    """

    heatmaps: torch.Tensor
    features: torch.Tensor
    encoding: torch.Tensor


class SimpleBaseline(nn.Module):
    """ResNet-style encoder + deconvolution head + 1x1 heatmap layer ("simple baselines").

    ``forward(images (N, 3, S, S)) -> BackboneOutput``. Images are expected normalised
    (roughly zero mean, unit variance per channel).
    """

    def __init__(self, num_joints: int, config: BackboneConfig | None = None) -> None:
        super().__init__()
        cfg = config or BackboneConfig()
        if num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        if cfg.stem_stride not in (1, 2, 4):
            raise ValueError(f"config.stem_stride must be 1, 2 or 4, got {cfg.stem_stride}")
        if len(cfg.blocks) < 1 or min(cfg.blocks) < 1:
            raise ValueError(f"config.blocks must be a non-empty tuple of ints >= 1, got {cfg.blocks}")
        self.config = cfg
        self.num_joints = num_joints
        stem: list[nn.Module] = [
            nn.Conv2d(3, cfg.width, 7, min(cfg.stem_stride, 2), 3, bias=False),
            nn.BatchNorm2d(cfg.width),
            nn.ReLU(inplace=True),
        ]
        if cfg.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        channels = cfg.width
        bottleneck = cfg.expansion == Bottleneck.expansion
        for i, n in enumerate(cfg.blocks):
            planes = cfg.width * 2**i
            layers: list[nn.Module] = []
            for b in range(n):
                stride = 2 if (i > 0 and b == 0) else 1
                if bottleneck:
                    layers.append(Bottleneck(channels, planes, stride))
                else:
                    layers.append(BasicBlock(channels, planes, stride))
                channels = planes * cfg.expansion
            stages.append(nn.Sequential(*layers))
        self.encoder = nn.Sequential(*stages)
        self.encoding_channels = channels
        deconv: list[nn.Module] = []
        for _ in range(cfg.deconv_layers):
            deconv += [
                nn.ConvTranspose2d(channels, cfg.deconv_channels, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cfg.deconv_channels),
                nn.ReLU(inplace=True),
            ]
            channels = cfg.deconv_channels
        self.deconv = nn.Sequential(*deconv)
        self.feature_channels = channels
        self.final = nn.Conv2d(channels, num_joints, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, S, S), got {tuple(images.shape)}")
        g = self.encoder(self.stem(images))
        f = self.deconv(g)
        return BackboneOutput(self.final(f), f, g)

    def stage_features(self, images: torch.Tensor, count: int | None = None) -> list[torch.Tensor]:
        """The encoder's maps at every scale: the stem's output, then each stage's output
        (strides ``stem_stride``, then doubling; ``expansion * width * 2**i`` channels), as a ResNet's
        ``conv1 .. conv5`` maps serve as generic image features (trunks, perceptual losses).
        ``count``: only the first ``count`` maps (the later stages are not run); None: all."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, S, S), got {tuple(images.shape)}")
        total = 1 + len(self.encoder)
        if count is not None and not (isinstance(count, int) and 1 <= count <= total):
            raise ValueError(f"count must be an int in 1..{total} or None, got {count!r}")
        n = total if count is None else count
        x = self.stem(images)
        maps = [x]
        for stage in list(self.encoder)[: n - 1]:
            x = stage(x)
            maps.append(x)
        return maps


class ConfidenceHead(nn.Module):
    """Per-image confidences from the encoder output (Iskakov et al. eq. 5, the ``q_phi`` branch).

    Two 3x3 convolutions, global average pooling and three fully connected layers; a softplus
    keeps the outputs positive. ``forward(encoding (N, Cin, h, w)) -> (N, out_features)``.
    """

    def __init__(self, in_channels: int, out_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 1, 1),
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(inplace=True),
        )
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(inplace=True),
            nn.Linear(hidden, out_features),
        )
        # Start with equal confidences (softplus(0) for every output).
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        x = self.features(encoding).mean(dim=(-2, -1))
        return nn.functional.softplus(self.head(x))
