import numpy as np
import pytest
import torch
import torch.nn as nn

from gcfeat.metrics.faithfulness import (
    deletion,
    gaussian_blur,
    insertion,
    mean_std,
    perturbation_curves,
    random_saliency,
    saliency_ranks,
    step_counts,
)


class RegionModel(nn.Module):
    """Logits (class 0, class 1) = (s * mean of x over region R, 0): a known cause in R."""

    def __init__(self, region: torch.Tensor, scale: float = 8.0):
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale = scale

    def forward(self, x):
        r = (x * self.region).flatten(1).sum(1) / self.region.sum()
        return torch.stack([self.scale * (r - 0.6), torch.zeros_like(r)], dim=1)


def _reference_curve(model, start, target, saliency, cls, n_steps, score):
    """A plain per-step loop: argsort the flattened saliency, copy the first k pixels."""
    b_scores = []
    for b in range(start.shape[0]):
        order = np.argsort(-saliency[b].flatten().numpy(), kind="stable")
        num = order.size
        row = []
        for t in range(n_steps + 1):
            k = (t * num) // n_steps
            img = start[b].clone().reshape(start.shape[1], -1)
            img[:, order[:k]] = target[b].reshape(start.shape[1], -1)[:, order[:k]]
            logits = model(img.reshape(1, *start.shape[1:]))
            if score == "prob":
                row.append(float(logits.softmax(-1)[0, cls[b]]))
            else:
                row.append(float(logits.argmax(-1)[0] == cls[b]))
        xs = np.array([(t * num) // n_steps for t in range(n_steps + 1)]) / num
        b_scores.append((np.array(row), np.trapz(row, xs) if hasattr(np, "trapz") else np.trapezoid(row, xs)))
    return b_scores


@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 4)])
@pytest.mark.parametrize("score", ["prob", "correct"])
def test_batched_curves_equal_per_step_loop(spatial, score):
    g = torch.Generator().manual_seed(0)
    region = torch.zeros(spatial)
    region[(slice(1, 4),) * len(spatial)] = 1
    model = RegionModel(region).eval()
    x = torch.rand(3, 2, *spatial, generator=g) + 0.2
    sal = torch.rand(3, *spatial, generator=g).round(decimals=1)  # ties: the stable order matters
    cls = torch.tensor([0, 1, 0])
    n = 13
    dele = deletion(model, x, sal, cls, n_steps=n, score=score, batch_size=5)
    ins = insertion(model, x, sal, cls, n_steps=n, score=score, blur_sigma=1.5, batch_size=4)
    ref_del = _reference_curve(model, x, torch.zeros_like(x), sal, cls, n, score)
    ref_ins = _reference_curve(model, gaussian_blur(x, 1.5), x, sal, cls, n, score)
    assert dele.scores.shape == (3, n + 1) and dele.x[0] == 0 and dele.x[-1] == 1
    for b in range(3):
        np.testing.assert_allclose(dele.scores[b].numpy(), ref_del[b][0], atol=1e-6)
        np.testing.assert_allclose(float(dele.auc[b]), ref_del[b][1], atol=1e-6)
        np.testing.assert_allclose(ins.scores[b].numpy(), ref_ins[b][0], atol=1e-6)
        np.testing.assert_allclose(float(ins.auc[b]), ref_ins[b][1], atol=1e-6)


def test_default_curve_has_130_points_and_ends():
    region = torch.zeros(6, 6, 6)
    region[:3] = 1
    model = RegionModel(region).eval()
    x = torch.rand(2, 1, 6, 6, 6) + 0.5
    res = deletion(model, x, torch.rand(2, 6, 6, 6), [0, 0])
    assert res.scores.shape == (2, 130)
    # Start: the full image; end: all zeros -> logits (-4.8, 0).
    full = model(x).softmax(-1)[:, 0]
    torch.testing.assert_close(res.scores[:, 0], full)
    torch.testing.assert_close(res.scores[:, -1], torch.full((2,), 1 / (1 + np.e**4.8)))


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_perfect_saliency_beats_random(spatial):
    g = torch.Generator().manual_seed(1)
    region = torch.zeros(spatial)
    region[(slice(2, 6),) * len(spatial)] = 1
    model = RegionModel(region, scale=10.0).eval()
    # Bright inside the region, dim outside: the blurred start loses the class.
    x = (region * 0.6 + 0.4 * torch.rand(4, 1, *spatial, generator=g)) * region + 0.1
    perfect = region.expand(4, *spatial) + 0.01 * torch.rand(4, *spatial, generator=g)
    rnd = random_saliency((4, *spatial), generator=g)
    cls = torch.zeros(4, dtype=torch.long)
    d_perfect = deletion(model, x, perfect, cls).auc.mean()
    d_random = deletion(model, x, rnd, cls).auc.mean()
    i_perfect = insertion(model, x, perfect, cls, blur_sigma=3).auc.mean()
    i_random = insertion(model, x, rnd, cls, blur_sigma=3).auc.mean()
    assert d_perfect + 0.2 < d_random
    assert i_perfect > i_random + 0.1


def test_ranks_stable_and_counts():
    sal = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    assert saliency_ranks(sal).tolist() == [[1, 0, 2, 3]]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 7, 10]
    with pytest.raises(ValueError, match="n_steps"):
        step_counts(10, 0)


def test_blur_matches_scipy_and_keeps_constants():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 1, 12, 10, 9, dtype=torch.float64)
    ours = gaussian_blur(x, 1.2)[0, 0].numpy()
    ref = gaussian_filter(x[0, 0].numpy(), 1.2, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=1e-3)  # scipy rounds the radius differently
    c = torch.full((1, 2, 5, 5), 3.0)
    torch.testing.assert_close(gaussian_blur(c, 2.0), c)


def test_bad_shapes_and_mean_std():
    model = RegionModel(torch.ones(4, 4))
    with pytest.raises(ValueError, match="saliency has shape"):
        deletion(model, torch.rand(2, 1, 4, 4), torch.rand(2, 5, 4), [0, 0])
    both = deletion(
        model, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), [0, 1], score=("prob", "correct"), n_steps=4
    )
    assert set(both) == {"prob", "correct"} and both["correct"].scores.shape == (2, 5)
    with pytest.raises(ValueError, match="score"):
        deletion(model, torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), [0], score="logit")
    m, s = mean_std(torch.tensor([1.0, 3.0]))
    assert (m, s) == (2.0, 1.0)
    with pytest.raises(ValueError, match="start"):
        perturbation_curves(model, torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5), torch.rand(1, 4, 4), [0])
