"""ROAD (noisy linear imputation, MoRF / LeRF) against pytorch-grad-cam and a naive loop;
Average Drop / Increase in Confidence by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gcfeat.metrics.faithfulness import confidence_change, noisy_linear_impute, road


def _tiny_model(seed=0, channels=3, d=2):
    torch.manual_seed(seed)
    conv = nn.Conv2d if d == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if d == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(
        conv(channels, 6, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(6, 4)
    ).eval()


@pytest.mark.parametrize("solver", ["cg", "direct"])
@pytest.mark.parametrize("removed", [0.3, 0.9])
def test_imputation_equals_pytorch_grad_cam(removed, solver):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 12, 14, generator=g)
    keep = torch.rand(12, 14, generator=g) >= removed
    ref = NoisyLinearImputer(noise=0.0)(img, keep.float())
    got = noisy_linear_impute(img[None], keep[None], noise=0.0, solver=solver)[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert torch.equal(got[:, keep], img[:, keep])


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_imputation_constant_image_2d_3d_and_noise(solver):
    img = torch.full((2, 1, 6, 7), 0.7)
    keep = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(1)) > 0.6
    keep[:, 0, 0] = True
    torch.testing.assert_close(noisy_linear_impute(img, keep, noise=0.0, solver=solver), img)
    vol = torch.full((1, 2, 4, 5, 5), -1.5)
    kv = torch.zeros(1, 4, 5, 5, dtype=torch.bool)
    kv[0, 0, 0, 0] = True  # one known voxel fixes the whole volume
    torch.testing.assert_close(noisy_linear_impute(vol, kv, noise=0.0, solver=solver), vol)
    a = noisy_linear_impute(img, keep, noise=0.01, generator=torch.Generator().manual_seed(3), solver=solver)
    b = noisy_linear_impute(img, keep, noise=0.01, generator=torch.Generator().manual_seed(3), solver=solver)
    assert torch.equal(a, b) and 0.003 < float((a - img)[:, :, ~keep[0]].std()) < 0.03


def _naive_road(model, x, sal, cls, pct, order):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    out = torch.zeros(len(x), len(pct))
    for b in range(len(x)):
        order_idx = torch.argsort(sal[b].flatten(), descending=(order == "morf"), stable=True)
        if order == "lerf":  # least relevant first, ties broken as the reverse of MoRF's order
            order_idx = torch.argsort(sal[b].flatten(), descending=True, stable=True).flip(0)
        for j, p in enumerate(pct):
            keep = torch.ones(sal[b].numel(), dtype=torch.bool)
            keep[order_idx[: round(p * sal[b].numel())]] = False
            xi = NoisyLinearImputer(noise=0.0)(x[b], keep.reshape(sal[b].shape).float())
            with torch.no_grad():
                out[b, j] = model(xi[None]).softmax(-1)[0, cls[b]]
    return out


def test_solvers_agree_3d_and_with_noise():
    g = torch.Generator().manual_seed(4)
    vol = torch.randn(2, 2, 5, 6, 7, generator=g)
    keep = torch.rand(2, 5, 6, 7, generator=g) > 0.7
    a = noisy_linear_impute(vol, keep, noise=0.01, generator=torch.Generator().manual_seed(0), solver="cg")
    b = noisy_linear_impute(
        vol, keep, noise=0.01, generator=torch.Generator().manual_seed(0), solver="direct"
    )
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="solver"):
        noisy_linear_impute(vol, keep, solver="lu")


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_road_equals_naive_loop(solver):
    model = _tiny_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 9, 11, generator=g)
    sal = torch.rand(3, 9, 11, generator=g)
    cls = torch.tensor([0, 2, 3])
    pct = (0.1, 0.5, 0.9)
    res = road(model, x, sal, cls, percentages=pct, noise=0.0, batch_size=4, solver=solver)
    for order in ("morf", "lerf"):
        ref = _naive_road(model, x, sal, cls, pct, order)
        torch.testing.assert_close(getattr(res, order), ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(res.base, model(x).softmax(-1)[torch.arange(3), cls])
    torch.testing.assert_close(res.combined, ((res.lerf - res.morf) / 2).mean(1))


def test_road_equals_pytorch_grad_cam_where_definitions_coincide():
    """pytorch-grad-cam keeps the pixels below the q-th percentile of the map (MoRF) and removes
    the rest; on a 10x10 map with distinct values that is exactly round((1 - q) N) pixels."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _tiny_model(1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 10, 10, generator=g)
    sal = torch.rand(2, 10, 10, generator=g)
    cls = [1, 3]
    targets = [ClassifierOutputSoftmaxTarget(c) for c in cls]
    qs = (20, 50, 80)
    res = road(model, x, sal, cls, percentages=[1 - q / 100 for q in qs], noise=0.0)
    for j, q in enumerate(qs):
        morf = PerturbationConfidenceMetric(RemoveMostRelevantFirst(q, NoisyLinearImputer(noise=0.0)))
        lerf = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(q, NoisyLinearImputer(noise=0.0)))
        ref_m = morf(x, sal.numpy(), targets, model, return_diff=False)
        ref_l = lerf(x, sal.numpy(), targets, model, return_diff=False)
        np.testing.assert_allclose(res.morf[:, j].numpy(), ref_m, atol=1e-5)
        np.testing.assert_allclose(res.lerf[:, j].numpy(), ref_l, atol=1e-5)


def test_road_3d_runs_batched():
    model = _tiny_model(0, channels=1, d=3)
    x = torch.randn(2, 1, 5, 6, 6)
    res = road(
        model, x, torch.rand(2, 5, 6, 6), [0, 1], percentages=(0.2, 0.6), orders=("morf",), batch_size=3
    )
    assert res.morf.shape == (2, 2) and res.lerf is None and bool(((res.morf >= 0) & (res.morf <= 1)).all())
    with pytest.raises(ValueError, match="percentages"):
        road(model, x, torch.rand(2, 5, 6, 6), [0, 1], percentages=(0.0, 0.5))


class _SumModel(nn.Module):
    """logits = [sum(x), 0]: p(class 0) = sigmoid(sum(x))."""

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_average_drop_increase_by_hand():
    x = torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2), torch.ones(1, 2, 2)])  # sums 4, -4, 4
    sal = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 0.5), torch.ones(2, 2)])
    res = confidence_change(_SumModel(), x, sal, [0, 0, 0])
    sig = lambda v: 1 / (1 + math.exp(-v))
    assert res.base.tolist() == pytest.approx([sig(4), sig(-4), sig(4)])
    assert res.explained.tolist() == pytest.approx([sig(2), sig(-2), sig(4)])
    assert res.average_drop == pytest.approx(100 * ((sig(4) - sig(2)) / sig(4)) / 3)
    assert res.increase_in_confidence == pytest.approx(100 / 3)
    # a baseline other than 0: E = b + L (x - b)
    res_b = confidence_change(_SumModel(), x[:1], torch.zeros(1, 2, 2), [0], baseline=1.0)
    assert res_b.explained.tolist() == pytest.approx([sig(4)])
