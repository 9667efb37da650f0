"""evaluate's map checks: ROAD, Average Drop / Increase in Confidence and the sanity stage on a
tiny trained CNN (its maps must change when it is randomised; a step that re-initialises nothing
must be reported as 'do NOT change')."""

import json

import pytest
import torch
from helpers import make_tiny_surgical
from torch import nn

from gcfeat.cam import GradCAM
from gcfeat.cli.evaluate import main as evaluate_main
from gcfeat.workflows.map_checks import check_maps


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer4 = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.layer4(self.conv1(x))).flatten(1))


def blobs(n, g):
    """Class k: a bright 6x6 square in colour channel k at a random place of a noisy 24x24."""
    x = torch.randn(n, 3, 24, 24, generator=g) * 0.3
    y = torch.randint(0, 3, (n,), generator=g)
    for i in range(n):
        r, c = torch.randint(0, 18, (2,), generator=g).tolist()
        x[i, y[i], r : r + 6, c : c + 6] += 2.0
    return x, y


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        x, y = blobs(32, g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x, y = blobs(6, g)
    assert (model.eval()(x).argmax(1) == y).float().mean() >= 0.8
    return model, x, y


def test_sanity_detects_the_change_and_says_when_there_is_none(trained, tmp_path):
    model, x, y = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heat = GradCAM(model, [model.layer4]).explain(x, y[:, None]).heatmap[:, 0]
    rnd = torch.rand(heat.shape, generator=torch.Generator().manual_seed(1))
    mc = check_maps(
        model,
        x,
        y,
        {"gradcam": heat, "random": rnd},
        target_layer="layer4",
        methods=["gradcam"],
        fractions=(0.2, 0.6),
        out=tmp_path,
    )
    s = mc.sanity["gradcam"]
    assert s["steps"] == ["fc", "layer4", "conv1"] and s["passes"]
    assert max(s["spearman"]) < 0.5 and "change as the model is randomised" in s["verdict"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a "randomisation" that re-initialises nothing: identical maps, reported plainly
    same = check_maps(model, x, y, {}, target_layer="layer4", methods=["gradcam"], sanity_layers=["pool"])
    assert same.sanity["gradcam"]["spearman"] == pytest.approx([1.0])
    assert "do NOT change" in same.sanity["gradcam"]["verdict"] and not same.sanity["gradcam"]["passes"]
    # ROAD and the confidence figures for both maps; files written
    for name in ("gradcam", "random"):
        r = mc.road[name]
        assert len(r["morf_curve"]) == len(r["lerf_curve"]) == 2
        assert 0 <= r["morf"] <= 1 and 0 <= r["lerf"] <= 1
        c = mc.confidence[name]
        assert 0 <= c["average_drop"] <= 100 and 0 <= c["increase_in_confidence"] <= 100
    # the CAM removes the class evidence faster than a random map (MoRF lower)
    assert mc.road["gradcam"]["morf"] < mc.road["random"]["morf"]
    doc = json.loads((tmp_path / "map_checks.json").read_text())
    assert doc["sanity"]["gradcam"]["verdict"] == s["verdict"]
    assert (tmp_path / "map_checks.png").stat().st_size > 10_000
    assert len(mc.table()) == 2


def test_evaluate_cli_surgical_map_checks(tmp_path, capsys):
    root = make_tiny_surgical(tmp_path, frames=4, seed=1, model_seed=1)
    rc = evaluate_main(
        [
            "--task",
            "surgical",
            "--data",
            str(root / "data"),
            "--checkpoint",
            str(root / "ck.pt"),
            "--out",
            str(tmp_path / "ev"),
            "--limit",
            "3",
            "--road-fractions",
            "0.5",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "ROAD" in out and "Sanity, gradcam" in out
    doc = json.loads((tmp_path / "ev" / "map_checks.json").read_text())
    assert set(doc["road"]) == {"gradcam", "random"} and doc["settings"]["n"] == 3
