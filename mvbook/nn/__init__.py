"""Small neural network building blocks: 2D "simple baselines" backbones, heads and a V2V 3D CNN."""

from __future__ import annotations

from mvbook.nn.backbones import (
    BackboneConfig,
    BackboneOutput,
    BasicBlock,
    Bottleneck,
    BottleneckConfig,
    ConfidenceHead,
    SimpleBaseline,
    resnet18_like,
    resnet_config,
)
from mvbook.nn.checkpoints import load_simple_baselines
from mvbook.nn.v2v import Res3DBlock, V2VNet

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "BasicBlock",
    "Bottleneck",
    "BottleneckConfig",
    "load_simple_baselines",
    "resnet18_like",
    "resnet_config",
    "ConfidenceHead",
    "Res3DBlock",
    "SimpleBaseline",
    "V2VNet",
]
