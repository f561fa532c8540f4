"""Published 2D "simple baselines" checkpoints as a :class:`~mvbook.nn.backbones.SimpleBaseline`.

The papers start from pose networks pretrained elsewhere: Iskakov et al. 2019 from a
SimpleBaselines ResNet-152 trained on COCO and MPII (and, for their released models, fine-tuned
on Human3.6M). Those checkpoints are ``torch.save``-d state dicts in the layout of the
SimpleBaselines code (``PoseResNet``)::

    conv1, bn1                              the 7x7 stem (a 3x3 max-pool follows: stride 4)
    layer{1..4}.{b}.conv{1,2[,3]}, .bn..    basic (ResNet-18/34) or bottleneck (50/101/152) blocks
    layer{1..4}.{b}.downsample.{0,1}        the 1x1 shortcut of a block that changes shape
    deconv_layers.{0,1, 3,4, 6,7}           three (transposed 4x4 convolution, batch norm, ReLU)
    final_layer                             the 1x1 heatmap convolution, one channel per joint

possibly under a ``state_dict`` entry and with ``module.`` (data parallel) or ``backbone.``
(a whole learnable-triangulation model) prefixes. :func:`load_simple_baselines` reads such a
file given by path (nothing is downloaded), infers the network's depth and widths from the
tensors, renames the parameters onto :class:`SimpleBaseline` and reorders the heatmap channels
from the checkpoint's joint order (``layout``) into the book's Human3.6M-17 order. Inputs are
RGB normalised with the ImageNet mean and std, as :func:`mvbook.crops.normalize_images` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from mvbook.nn.backbones import BackboneConfig, BottleneckConfig, SimpleBaseline
from mvbook.skeletons import H36M_17
from mvbook.validation import check_choice

__all__ = ["JOINT_LAYOUTS", "checkpoint_config", "load_simple_baselines", "simple_baselines_state_dict"]

_N = None  # a book joint that the checkpoint has no channel for (its filter is re-initialised)

#: For each checkpoint joint order, the checkpoint's number of heatmap channels and, for every
#: joint of the book's ``h36m17`` order (0 pelvis, 1 r_hip, 2 r_knee, 3 r_ankle, 4 l_hip,
#: 5 l_knee, 6 l_ankle, 7 spine, 8 thorax, 9 neck_nose, 10 head, 11 l_shoulder, 12 l_elbow,
#: 13 l_wrist, 14 r_shoulder, 15 r_elbow, 16 r_wrist), the checkpoint channel that holds it.
#:
#: - ``"h36m17"``: the book's own order.
#: - ``"learnable-triangulation"``: the Human3.6M models of Iskakov et al. (their labels: the 16
#:   MPII joints -- r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle, pelvis, thorax, upper neck,
#:   head top, r_wrist, r_elbow, r_shoulder, l_shoulder, l_elbow, l_wrist -- then the nose; their
#:   Human3.6M labels put the spine, thorax and head joints in the MPII thorax, upper-neck and
#:   head-top channels, and this mapping follows them).
#: - ``"mpii"``: a 16-joint MPII checkpoint read the same way; neck_nose has no channel.
#: - ``"coco"``: a 17-keypoint COCO checkpoint (nose, eyes, ears, shoulders, elbows, wrists, hips,
#:   knees, ankles); pelvis, spine, thorax and head have no channel, neck_nose is the nose.
JOINT_LAYOUTS: dict[str, tuple[int, tuple[int | None, ...]]] = {
    "h36m17": (17, tuple(range(17))),
    "learnable-triangulation": (17, (6, 2, 1, 0, 3, 4, 5, 7, 8, 16, 9, 13, 14, 15, 12, 11, 10)),
    "mpii": (16, (6, 2, 1, 0, 3, 4, 5, 7, 8, _N, 9, 13, 14, 15, 12, 11, 10)),
    "coco": (17, (_N, 12, 14, 16, 11, 13, 15, _N, _N, 0, _N, 5, 7, 9, 6, 8, 10)),
}

_PREFIXES = ("module.", "backbone.")
_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    state = obj
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{path}: expected a state dict (a mapping of parameter names to tensors), "
                         f"got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        name = k
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = v
    return out


def _infer_config(state: dict[str, torch.Tensor], path: str) -> BackboneConfig:
    required = ["conv1.weight", "bn1.weight", "deconv_layers.0.weight", "final_layer.weight"]
    missing = [k for k in required if k not in state]
    blocks: dict[int, int] = {}
    for k in state:
        m = _BLOCK.match(k)
        if m:
            stage, b = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), b + 1)
    if not blocks:
        missing.append("layer1.0.conv1.weight")
    if missing:
        raise ValueError(f"{path}: not a SimpleBaselines (PoseResNet) state dict: missing keys "
                         f"{', '.join(missing)}")
    if sorted(blocks) != list(range(1, len(blocks) + 1)):
        raise ValueError(f"{path}: encoder stages must be layer1..layerN, found layers {sorted(blocks)}")
    n_deconv = 0
    while f"deconv_layers.{3 * n_deconv}.weight" in state:
        n_deconv += 1
    kind = BottleneckConfig if "layer1.0.conv3.weight" in state else BackboneConfig
    return kind(width=int(state["conv1.weight"].shape[0]),
                blocks=tuple(blocks[i] for i in sorted(blocks)), stem_stride=4,
                deconv_layers=n_deconv,
                deconv_channels=int(state["deconv_layers.0.weight"].shape[1]))


def _book_name(name: str) -> str | None:
    """The :class:`SimpleBaseline` parameter name of a PoseResNet one (None: not a backbone key)."""
    if name.startswith("conv1."):
        return "stem.0." + name[len("conv1."):]
    if name.startswith("bn1."):
        return "stem.1." + name[len("bn1."):]
    m = _BLOCK.match(name)
    if m:
        rest = m.group(3).replace("downsample.", "shortcut.")
        return f"encoder.{int(m.group(1)) - 1}.{m.group(2)}.{rest}"
    if name.startswith("deconv_layers."):
        return "deconv." + name[len("deconv_layers."):]
    if name.startswith("final_layer."):
        return "final." + name[len("final_layer."):]
    return None


def simple_baselines_state_dict(state: Mapping[str, torch.Tensor], layout: str,
                                model: SimpleBaseline, path: str = "checkpoint") -> dict:
    """Rename a PoseResNet state dict onto ``model`` and reorder its heatmap channels.

    Channels of book joints the layout lacks keep ``model``'s (freshly initialised) filters.
    Raises ``ValueError`` naming the missing keys, or the shapes that differ.
    """
    check_choice(layout, "layout", tuple(JOINT_LAYOUTS))
    channels, order = JOINT_LAYOUTS[layout]
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        name = _book_name(k)
        if name is None or name not in own:
            continue
        if name.startswith("final."):
            if v.shape[0] != channels:
                raise ValueError(f"{path}: final_layer has {v.shape[0]} heatmap channels, the "
                                 f"layout {layout!r} has {channels}")
            fresh = own[name].clone()
            for j, c in enumerate(order):
                if c is not None:
                    fresh[j] = v[c]
            v = fresh
        if v.shape != own[name].shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the network inferred from "
                             f"the checkpoint expects {tuple(own[name].shape)}")
        out[name] = v
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"{path}: the checkpoint lacks {len(missing)} parameters of the network: {shown}")
    return out


def _read(path: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"backbone weights: no file {str(p)!r}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{p}: cannot be read as a torch checkpoint ({err})") from err
    return p, _unwrap(raw, str(p))


def checkpoint_config(path: str | Path) -> BackboneConfig:
    """The :class:`BackboneConfig` of the PoseResNet saved at ``path`` (depth, widths), inferred
    from its tensors; errors as :func:`load_simple_baselines`."""
    p, state = _read(path)
    return _infer_config(state, str(p))


def load_simple_baselines(path: str | Path, layout: str = "learnable-triangulation") -> SimpleBaseline:
    """A :class:`SimpleBaseline` (Human3.6M-17 heatmaps) holding a published 2D checkpoint.

    Args:
        path: a ``.pth`` file of the SimpleBaselines or learnable-triangulation code (e.g.
            ``pose_resnet_152_384x384.pth`` of MPII, or the Human3.6M-finetuned backbone); read
            with ``weights_only=True``. Nothing is downloaded.
        layout: the checkpoint's joint order, a key of :data:`JOINT_LAYOUTS`.

    Returns:
        the network in eval mode, its depth and widths inferred from the checkpoint. Heatmap
        filters of joints the layout lacks are freshly initialised (to be fine-tuned).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a PoseResNet state dict (the message names the missing keys),
            or its final layer does not match ``layout``.
    """
    check_choice(layout, "layout", tuple(JOINT_LAYOUTS))
    p, state = _read(path)
    model = SimpleBaseline(H36M_17.num_joints, _infer_config(state, str(p)))
    model.load_state_dict(simple_baselines_state_dict(state, layout, model, str(p)), strict=False)
    return model.eval()
