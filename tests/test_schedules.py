"""The warm-up + cosine schedule against torch's own cosine annealing."""

from __future__ import annotations

import pytest
import torch

from mvbook.schedules import warmup_cosine


def _rates(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_part_matches_torch_cosine_annealing():
    steps, floor, lr = 50, 0.01, 0.2
    p = torch.nn.Parameter(torch.zeros(1))
    opt_a = torch.optim.SGD([p], lr=lr)
    ours = _rates(torch.optim.lr_scheduler.LambdaLR(opt_a, warmup_cosine(steps, 0, floor)), opt_a, steps + 5)
    opt_b = torch.optim.SGD([p], lr=lr)
    ref = _rates(torch.optim.lr_scheduler.CosineAnnealingLR(opt_b, T_max=steps, eta_min=floor * lr),
                 opt_b, steps + 1)
    assert ours[: steps + 1] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert ours[steps:] == pytest.approx([floor * lr] * 5)


def test_warmup_is_linear_then_decays_from_the_full_rate():
    f = warmup_cosine(100, warmup=10)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(100) == pytest.approx(0.01) and f(1000) == pytest.approx(0.01)


@pytest.mark.parametrize("kw, name", [(dict(steps=-1), "steps"), (dict(steps=5, warmup=-2), "warmup"),
                                      (dict(steps=5, floor=1.5), "floor")])
def test_bad_arguments_are_named(kw, name):
    with pytest.raises(ValueError, match=name):
        warmup_cosine(**kw)
