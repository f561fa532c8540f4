"""Small neural network building blocks: 2D "simple baselines" backbones, heads and a V2V 3D CNN."""

from __future__ import annotations

from mvbook.nn.backbones import (
    BackboneConfig,
    BackboneOutput,
    BasicBlock,
    ConfidenceHead,
    SimpleBaseline,
    resnet18_like,
)
from mvbook.nn.v2v import Res3DBlock, V2VNet

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "BasicBlock",
    "resnet18_like",
    "ConfidenceHead",
    "Res3DBlock",
    "SimpleBaseline",
    "V2VNet",
]
