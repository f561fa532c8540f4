"""Tests of mvbook.nn: shapes, strides and gradients of the backbone, heads and V2V."""

from __future__ import annotations

import pytest
import torch

from mvbook.nn import BackboneConfig, ConfidenceHead, SimpleBaseline, V2VNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.parametrize(
    "cfg,size,out",
    [
        (BackboneConfig(width=8, blocks=(1, 1, 1), stem_stride=2, deconv_layers=2), 64, 32),
        (BackboneConfig(width=8, blocks=(1, 1), stem_stride=4, deconv_layers=1), 64, 16),
        (BackboneConfig(width=8, blocks=(2, 1, 1, 1), stem_stride=4, deconv_layers=3), 64, 16),
    ],
)
def test_simple_baseline_shapes(cfg, size, out):
    torch.manual_seed(0)
    net = SimpleBaseline(5, cfg)
    y = net(torch.randn(2, 3, size, size))
    assert y.heatmaps.shape == (2, 5, out, out)
    assert y.features.shape == (2, cfg.deconv_channels, out, out)
    assert y.encoding.shape[1] == net.encoding_channels
    assert size // cfg.output_stride == out


def test_backbone_gradients_and_validation():
    torch.manual_seed(0)
    net = SimpleBaseline(3, BackboneConfig(width=8))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    net(x).heatmaps.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="images"):
        net(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="num_joints"):
        SimpleBaseline(0)


def test_confidence_head_positive():
    head = ConfidenceHead(16, 7, hidden=8)
    w = head(torch.randn(4, 16, 5, 5))
    assert w.shape == (4, 7) and (w > 0).all()


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_v2v_shapes_and_gradients(norm):
    torch.manual_seed(0)
    net = V2VNet(4, 6, width=8, levels=2, norm=norm)
    x = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 6, 8, 8, 8)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 4, 6, 8, 8))


def test_stage_features_are_the_encoder_maps_at_every_scale():
    cfg = BackboneConfig(width=8, blocks=(1, 2, 1), stem_stride=4, deconv_layers=2, deconv_channels=8)
    net = SimpleBaseline(5, cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = net.stage_features(x)
        encoding = net(x).encoding
        # an independent composition of the same layers, one by one
        y = x
        for layer in net.stem:
            y = layer(y)
        expected = [y]
        for stage in net.encoder:
            for block in stage:
                y = block(y)
            expected.append(y)
    assert [tuple(m.shape) for m in maps] == [(2, 8, 16, 16), (2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(maps[-1], encoding)
    with pytest.raises(ValueError, match="images"):
        net.stage_features(torch.randn(2, 1, 64, 64))


def test_v2v_authors_layout_has_the_size_of_their_network():
    # the V2V of Iskakov et al.'s code, counted block by block from its definition
    def conv(i, o, k):
        return i * o * k**3 + o

    def bn(o):
        return 2 * o

    def basic(i, o, k):
        return conv(i, o, k) + bn(o)

    def res(i, o):
        return conv(i, o, 3) + bn(o) + conv(o, o, 3) + bn(o) + (conv(i, o, 1) + bn(o) if i != o else 0)

    def up(i, o):
        return i * o * 8 + o + bn(o)

    K, J = 32, 17
    front = basic(K, 16, 7) + res(16, 32) + 2 * res(32, 32)
    encoder = res(32, 64) + res(64, 128) + 3 * res(128, 128)
    mid = res(128, 128)
    decoder = 4 * res(128, 128) + res(64, 64) + 3 * up(128, 128) + up(128, 64) + up(64, 32)
    skips = res(32, 32) + res(64, 64) + 3 * res(128, 128)
    back = res(32, 32) + 2 * basic(32, 32, 1) + conv(32, J, 1)
    want = front + encoder + mid + decoder + skips + back
    net = V2VNet(K, J, width=32, levels=5, front_kernel=7, layout="authors")
    assert sum(p.numel() for p in net.parameters()) == want
    with torch.no_grad():
        y = net.eval()(torch.randn(1, K, 32, 32, 32))
    assert y.shape == (1, J, 32, 32, 32)
    with pytest.raises(ValueError, match="layout"):
        V2VNet(K, J, layout="paper")
