"""Tests of mvbook.nn.checkpoints: published SimpleBaselines (PoseResNet) checkpoints.

The reference is a PoseResNet written here in the published code's layout and parameter names
(independent of mvbook's SimpleBaseline); its random weights are saved as a checkpoint file and
loaded through ``load_simple_baselines``: the heatmaps must agree channel by channel after the
layout's reordering.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mvbook.nn.backbones import SimpleBaseline, resnet_config
from mvbook.nn.checkpoints import JOINT_LAYOUTS, load_simple_baselines

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RefBasic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class RefBottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class RefPoseResNet(nn.Module):
    """The published PoseResNet's structure and names, at a small width."""

    def __init__(self, bottleneck, layers, joints, width=8, deconv=16):
        super().__init__()
        block, exp = (RefBottleneck, 4) if bottleneck else (RefBasic, 1)
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for b in range(n):
                blocks.append(block(cin, planes, 2 if (i > 0 and b == 0) else 1))
                cin = planes * exp
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n = len(layers)
        dec = []
        for _ in range(3):
            dec += [nn.ConvTranspose2d(cin, deconv, 4, 2, 1, bias=False), nn.BatchNorm2d(deconv),
                    nn.ReLU(inplace=True)]
            cin = deconv
        self.deconv_layers = nn.Sequential(*dec)
        self.final_layer = nn.Conv2d(deconv, joints, 1)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(self.n):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.final_layer(self.deconv_layers(x))


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model.eval()


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("layout", ["learnable-triangulation", "h36m17", "mpii", "coco"])
def test_loaded_checkpoint_reproduces_the_reference_heatmaps(tmp_path, bottleneck, layout):
    channels, order = JOINT_LAYOUTS[layout]
    ref = _randomised(RefPoseResNet(bottleneck, (2, 1, 1), channels), seed=3)
    state = {"module." + k: v for k, v in ref.state_dict().items()}  # saved from DataParallel
    path = tmp_path / "pose_resnet.pth"
    torch.save({"epoch": 140, "state_dict": state}, path)
    model = load_simple_baselines(path, layout=layout)
    assert model.config.blocks == (2, 1, 1) and model.config.expansion == (4 if bottleneck else 1)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(x)
        got = model(x).heatmaps
    assert got.shape == (2, 17, 32, 32)  # stride 16 encoder, three 2x deconvolutions
    for j, c in enumerate(order):
        if c is not None:
            torch.testing.assert_close(got[:, j], want[:, c], rtol=1e-4, atol=1e-4)
    # joints the layout lacks are new filters, not a copy of some checkpoint channel
    for j in [j for j, c in enumerate(order) if c is None]:
        assert not any(torch.allclose(got[:, j], want[:, c], atol=1e-3) for c in range(channels))


def test_the_learnable_triangulation_order_names_the_same_joints():
    # their labels: Human3.6M's 32-joint indices (3,2,1,6,7,8,0,12,13,15,27,26,25,17,18,19,14);
    # the book's h36m17 holds the 32-joint indices below
    theirs = (3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19, 14)
    book = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
    _, order = JOINT_LAYOUTS["learnable-triangulation"]
    assert tuple(theirs[c] for c in order) == book


def test_resnet_configs_have_the_published_encoder_sizes():
    # parameters of the ImageNet ResNets without their 1000-way classifier (2048 * 1000 + 1000)
    for depth, total in ((50, 25_557_032), (152, 60_192_808)):
        net = SimpleBaseline(17, resnet_config(depth))
        n = sum(p.numel() for m in (net.stem, net.encoder) for p in m.parameters())
        assert n == total - 2_049_000, depth
        assert net.encoding_channels == 2048
    net18 = SimpleBaseline(17, resnet_config(18))
    n = sum(p.numel() for m in (net18.stem, net18.encoder) for p in m.parameters())
    assert n == 11_689_512 - (512 * 1000 + 1000)


def test_wrong_files_are_refused_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        load_simple_baselines(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_simple_baselines(bad)
    ref = RefPoseResNet(False, (1, 1), 17)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("layer2.0.conv2")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 1 parameters.*encoder\.1\.0\.conv2\.weight"):
        load_simple_baselines(tmp_path / "partial.pth", layout="h36m17")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="missing keys conv1.weight"):
        load_simple_baselines(tmp_path / "other.pth")
    torch.save(ref.state_dict(), tmp_path / "j17.pth")
    with pytest.raises(ValueError, match="16"):
        load_simple_baselines(tmp_path / "j17.pth", layout="mpii")
    with pytest.raises(ValueError, match="layout"):
        load_simple_baselines(tmp_path / "j17.pth", layout="openpose")


def test_chapter_10_starts_from_a_checkpoint_given_by_path(tmp_path):
    from mvbook.methods import learnable_triangulation as lt

    ref = _randomised(RefPoseResNet(True, (1, 1, 1, 1), 17, width=4, deconv=8), seed=1)
    torch.save({"module.backbone." + k: v for k, v in ref.state_dict().items()}, tmp_path / "w.pth")
    plan = lt.settings("smoke", backbone_weights=str(tmp_path / "w.pth"))
    assert plan.pretrained == "checkpoint" and plan.steps["pretrain"] == 0
    assert plan.config.backbone.blocks == (1, 1, 1, 1) and plan.config.backbone.expansion == 4
    backbone = lt.initial_backbone(plan)
    x = torch.randn(1, 3, plan.config.crop_size, plan.config.crop_size)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x).heatmaps[:, 0], ref(x)[:, 6], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="backbone_layout"):
        lt.settings("smoke", backbone_weights=str(tmp_path / "w.pth"), backbone_layout="xyz")
    with pytest.raises(FileNotFoundError, match="no file"):
        lt.settings("smoke", backbone_weights=str(tmp_path / "missing.pth"))
