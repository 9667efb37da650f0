"""Sanity checks: Spearman / SSIM against scipy / skimage, cascading randomisation on a copy,
the random-logit test."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from gcfeat.cam import GradCAM
from gcfeat.metrics.sanity import (
    SanityError,
    cam_map_fn,
    cascading_randomization,
    random_logit_test,
    spearman,
    ssim,
    top_down_layers,
)
from gcfeat.models import build_classifier


def test_spearman_with_ties_equals_scipy():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(4, 6, 7, generator=g) * 5).floor()  # many ties
    b = a + torch.rand(4, 6, 7, generator=g) * 3
    b[1] = -a[1]
    got = spearman(a, b)
    for i in range(4):
        assert float(got[i]) == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-12)
    assert float(got[1]) == pytest.approx(-1.0)
    assert torch.isnan(spearman(torch.zeros(1, 3, 3), torch.rand(1, 3, 3))).all()


@pytest.mark.parametrize("shape", [(3, 20, 24), (2, 12, 13, 14)])
def test_ssim_equals_skimage(shape):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(shape, generator=g)
    b = (a + 0.3 * torch.rand(shape, generator=g)).clamp(0, 1)
    got = ssim(a, b)
    for i in range(shape[0]):
        ref = structural_similarity(
            a[i].numpy().astype(np.float64),
            b[i].numpy().astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(got[i]) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * shape[0])
    with pytest.raises(SanityError, match="too small"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_cascading_randomization_leaves_the_model_alone(one_thread):
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 48, 64)
    fn = cam_map_fn(GradCAM, ["layer4"])
    layers = ["fc", "layer4", "layer3"]
    state = torch.random.get_rng_state()
    res = cascading_randomization(model, x, [1, 3], fn, layers=layers, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert res.steps == layers and res.spearman.shape == (3, 2) and res.ssim.shape == (3, 2)
    assert bool((res.ssim < 0.99).all())  # the maps changed at every step
    again = cascading_randomization(model, x, [1, 3], fn, layers=layers, seed=0)
    torch.testing.assert_close(again.spearman, res.spearman, equal_nan=True)
    assert "maps" in res.summary()
    assert top_down_layers(model)[:3] == ["fc", "layer4", "layer3"]
    with pytest.raises(SanityError, match="layer9"):
        cascading_randomization(model, x, [1, 3], fn, layers=["layer9"])


def test_randomising_a_layer_the_map_ignores_is_reported():
    """A map that does not depend on the model: every step is reported unchanged."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=3).eval()
    x = torch.rand(2, 3, 32, 40)
    res = cascading_randomization(model, x, [0, 1], lambda m, im, c: im.mean(1), layers=["fc", "layer4"])
    assert res.spearman.flatten().tolist() == pytest.approx([1.0] * 4)
    assert res.unchanged_steps() == ["fc", "layer4"] and "do NOT change" in res.summary()


def test_random_logit_test(one_thread):
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=4).eval()
    x = torch.randn(3, 3, 48, 64)
    res = random_logit_test(model, x, [0, 1, 2], cam_map_fn(GradCAM, ["layer4"]), 4, seed=1)
    assert res.other.shape == (3,) and bool((res.other != torch.tensor([0, 1, 2])).all())
    assert res.spearman.shape == (3,) and bool((res.ssim < 0.999).all())
    same = random_logit_test(model, x, [0, 1, 2], lambda m, im, c: im.mean(1), 4)
    assert same.ssim.tolist() == pytest.approx([1.0] * 3)
