"""The zoo's dense task (dense0): label crops keep their values, the augmentation moves labels
with the image, the loss and metrics match slow references, and training runs end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mvbook import zoo
from mvbook.crops import crop_images, square_boxes, warp_crops
from mvbook.studio import NUM_PARTS
from mvbook.zoo import dense
from mvbook.zoo.recipes import recipe


def test_nearest_crops_take_the_pixel_under_each_crop_pixel_centre():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 17, (2, 3, 40, 50), generator=g).float()
    boxes = torch.tensor([[3.0, 5.0, 33.0, 35.0], [10.0, 0.0, 40.0, 30.0]])  # no centre on a .5
    out = crop_images(labels, boxes, 8, mode="nearest")
    for n in range(2):  # slow reference: crop pixel k covers [x0 + k w/8, x0 + (k+1) w/8)
        x0, y0, x1, y1 = boxes[n].tolist()
        for a in range(8):
            for b in range(8):
                u = x0 - 0.5 + (b + 0.5) * (x1 - x0) / 8   # image px of the crop pixel centre
                v = y0 - 0.5 + (a + 0.5) * (y1 - y0) / 8
                assert torch.equal(out[n, :, a, b], labels[n, :, round(v), round(u)])
    with pytest.raises(ValueError, match="mode"):
        crop_images(labels, boxes, 8, mode="cubic")


def test_dense_augmentation_moves_labels_with_the_image():
    rec = recipe("dense0", "smoke")
    S, h = rec.crop_size, dense.output_size(rec)
    images = torch.zeros(6, 3, S, S, dtype=torch.uint8)
    images[:, :, 8:16, 12:20] = 255          # a bright square on the image ...
    iuv = torch.zeros(6, 3, h, h)
    r = S // h
    iuv[:, 0, 8 // r:16 // r, 12 // r:20 // r] = 3.0  # ... labelled as part 3
    plain = dataclasses.replace(rec, augment=dataclasses.replace(rec.augment, colour=0.0, permute=0.0,
                                                                 noise=0.0))
    out = dense.augment({"images": images, "iuv": iuv}, plain, torch.Generator().manual_seed(1))
    assert set(out["iuv"][:, 0].unique().tolist()) <= {0.0, 3.0}  # nearest: no blended labels
    bright = torch.nn.functional.avg_pool2d((out["images"][:, 0] > 0).float()[:, None], r)[:, 0]
    part = out["iuv"][:, 0] == 3
    # the label lands where the bright square went (overlap of at least 80% of the label)
    assert bool(((bright[part] > 0.5).float().mean()) > 0.8)


def test_uv_of_the_part_and_the_loss_match_a_loop():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 1 + 3 * NUM_PARTS, 4, 4, generator=g)
    part = torch.randint(0, NUM_PARTS + 1, (2, 4, 4), generator=g)
    _, uv = dense.split_outputs(maps)
    got = dense.uv_at(uv, part)
    for n in range(2):
        for a in range(4):
            for b in range(4):
                p = max(int(part[n, a, b]), 1) - 1
                ch = 1 + NUM_PARTS + 2 * p
                ref = torch.sigmoid(maps[n, ch:ch + 2, a, b])
                torch.testing.assert_close(got[n, :, a, b], ref)
    iuv = torch.cat([part[:, None].float(), torch.rand(2, 2, 4, 4, generator=g)], 1)
    loss, logs = dense.dense_loss(maps, iuv)
    ce = torch.nn.functional.cross_entropy(maps[:, :1 + NUM_PARTS], part)
    assert float(logs["ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(loss) == pytest.approx(float(ce + dense.UV_WEIGHT * logs["uv"]), rel=1e-5)


class Oracle(torch.nn.Module):
    """Outputs that encode given labels: huge logits on the true part, UV logits of the truth."""

    def __init__(self, iuv: torch.Tensor, flip_uv: bool = False) -> None:
        super().__init__()
        self.iuv = iuv
        self.flip_uv = flip_uv
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.pos = 0  # the crops come in order, in batches

    def forward(self, images):
        from mvbook.nn.backbones import BackboneOutput

        iuv = self.iuv[self.pos:self.pos + len(images)]
        self.pos += len(images)
        N, _, h, w = iuv.shape
        maps = torch.zeros(N, 1 + 3 * NUM_PARTS, h, w)
        part = iuv[:, 0].long()
        maps[:, :1 + NUM_PARTS] = 20 * torch.nn.functional.one_hot(part, 1 + NUM_PARTS).permute(0, 3, 1, 2)
        uv = iuv[:, 1:].clamp(1e-4, 1 - 1e-4)
        uv = 1 - uv if self.flip_uv else uv
        logit = torch.log(uv / (1 - uv))
        maps[:, 1 + NUM_PARTS:] = logit.repeat(1, NUM_PARTS, 1, 1)
        return BackboneOutput(maps, maps, maps)


def test_person_crops_and_metrics_of_a_perfect_and_a_wrong_predictor(tmp_path, one_torch_thread):
    from mvbook.data.format import MultiviewDataset
    from mvbook.studio.build import build_studio

    rec = recipe("dense0", "smoke")
    cfg = rec.train_data[0]
    ds = MultiviewDataset(build_studio("smoke", cfg.scene, cfg.seed, tmp_path, False, config=cfg),
                          split="train")
    bank = dense.person_crops(ds, rec, progress=False)
    iuv = bank.tensors["iuv"]
    assert iuv.shape[1:] == (3, dense.output_size(rec), dense.output_size(rec))
    part = iuv[:, 0]
    assert torch.equal(part, part.round()) and part.min() >= 0 and part.max() <= NUM_PARTS
    assert float((part > 0).float().mean()) > 0.05  # the person covers part of its crop
    assert float(iuv[:, 1:].min()) >= 0 and float(iuv[:, 1:].max()) <= 1
    # the labels are the studio's IUV at the crop pixels' centres
    s = ds[0]
    box = square_boxes(torch.as_tensor(np.asarray(s["bbox"]))[0, 0].float()[None], rec.crop_scale)
    ref = crop_images(torch.as_tensor(np.asarray(s["iuv"]))[:1].float(), box, dense.output_size(rec),
                      mode="nearest")
    torch.testing.assert_close(iuv[0], ref[0])
    perfect = dense.evaluate(Oracle(iuv), bank)
    assert perfect["part accuracy"] == pytest.approx(100.0) and perfect["foreground IoU"] == pytest.approx(100.0)
    assert perfect["UV error"] < 1e-3
    wrong = dense.evaluate(Oracle(iuv, flip_uv=True), bank)
    assert wrong["UV error"] > 0.1


def test_zoo_train_dense0_smoke_end_to_end(tmp_path, one_torch_thread):
    card = zoo.train_model("dense0", "smoke", tmp_path / "z", device="cpu", progress=False,
                           cache_dir=tmp_path / "cache")
    assert set(card["held_out"]["metrics"]) == {"part accuracy", "foreground IoU", "UV error", "pixels"}
    model = zoo.load("dense0", "smoke", folder=tmp_path / "z")
    out = model(torch.zeros(1, 3, 32, 32)).heatmaps
    assert out.shape[1] == 1 + 3 * NUM_PARTS
    warped, _ = warp_crops(torch.zeros(1, 3, 8, 8), None, torch.zeros(1), torch.ones(1), torch.zeros(1, 2),
                           mode="nearest")
    assert warped.shape == (1, 3, 8, 8)


def test_banks_refuse_missing_or_ragged_tensors():
    with pytest.raises(ValueError, match=r"DenseBank needs tensors .* missing \['iuv'\]"):
        dense.DenseBank({"images": torch.zeros(2, 3, 4, 4), "box_side": torch.ones(2)})
    with pytest.raises(ValueError, match="do not have 2 rows"):
        dense.DenseBank({"images": torch.zeros(2, 3, 4, 4), "iuv": torch.zeros(3, 3, 1, 1),
                         "box_side": torch.ones(2)})
    a = dense.DenseBank({"images": torch.zeros(2, 3, 4, 4), "iuv": torch.zeros(2, 3, 1, 1),
                         "box_side": torch.ones(2)})
    both = dense.DenseBank.cat([a, a])
    assert isinstance(both, dense.DenseBank) and len(both) == 4
