"""`python -m gcfeat.bbox` end to end on a tiny synthetic MICCAI-layout set and a resnet18."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import make_tiny_surgical

from gcfeat.cli import bbox


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_surgical(tmp_path_factory.mktemp("bbox"), frames=4, seed=3, model_seed=0)


def parse_boxes(text):
    rows = re.findall(r"^\s+(\d+) (\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)$", text, re.M)
    return [(int(k), name, int(a), int(b), int(c), int(d), float(s)) for k, name, a, b, c, d, s in rows]


def api_boxes(root, bidx, threshold, pred_threshold):
    """The same frame through the public API, independently of the CLI's code."""
    from gcfeat.boxes import heatmap_to_boxes
    from gcfeat.cam import GradCAM
    from gcfeat.data import build_dataset
    from gcfeat.models import load_checkpoint

    model, info = load_checkpoint(root / "ck.pt")
    model.eval()
    ds = build_dataset(root / "data", "auto", "val", size=info.input_size, mean=info.mean, std=info.std)
    res = GradCAM(model, [model.layer4]).explain(ds[bidx]["image"][None])
    probs = torch.sigmoid(res.logits)
    b = heatmap_to_boxes(
        res.heatmap, threshold, probs=probs, pred_threshold=pred_threshold, class_modes={10: "union"}
    )
    names = list(info.classes)
    return [
        (k, names[k], *map(int, xyxy), round(s, 3))
        for xyxy, k, s in zip(b.xyxy.tolist(), b.label.tolist(), b.score.tolist())
    ]


def test_bbox_figure_and_printed_boxes_equal_api(tiny, capsys):
    out = tiny / "fig.png"
    rc = bbox.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            "--bidx",
            "2",
            "--tclass",
            "prograsp_forceps",
            "--threshold",
            "0.4",
            "--pred-threshold",
            "0.0",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not blank
    printed = parse_boxes(text)
    expected = api_boxes(tiny, 2, 0.4, 0.0)
    assert len(printed) >= 5  # every class is predicted at pred-threshold 0
    assert [p[:6] for p in printed] == [e[:6] for e in expected]
    np.testing.assert_allclose([p[6] for p in printed], [e[6] for e in expected], atol=1.5e-3)
    assert "boxes drawn" in text and "ground-truth boxes" in text


def test_bbox_default_out_name_and_class_index(tiny, capsys, monkeypatch):
    monkeypatch.chdir(tiny)
    rc = bbox.main(
        ["--data", "data", "--checkpoint", "ck.pt", "--bidx", "0", "--tclass", "3", "--method", "gradcampp"]
    )
    assert rc == 0
    assert (tiny / "runs" / "demo" / "bbox_0_monopolar_curved_scissors.png").is_file()
    printed = parse_boxes(capsys.readouterr().out)
    assert all(0 <= p[0] < 11 for p in printed)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bidx", "4"], r"--bidx 4: .* has 4 frames; expected 0\.\.3"),
        (["--bidx", "-1"], r"expected 0\.\.3"),
        (["--tclass", "scalpel"], r"--tclass 'scalpel'.*0 bipolar_forceps.*10 tissue"),
        (["--tclass", "11"], r"expected an index 0\.\.10"),
        (["--threshold", "1.5"], r"--threshold 1.5"),
        (["--layer", "layer9"], r"--layer 'layer9'"),
    ],
)
def test_bbox_user_errors(tiny, capsys, args, message):
    rc = bbox.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            *args,
            "--out",
            str(tiny / "x.png"),
        ]
    )
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)


def test_bbox_missing_checkpoint_says_run_demo(tiny, capsys):
    rc = bbox.main(["--data", str(tiny / "data"), "--checkpoint", str(tiny / "none.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "scripts/demo" in err and "--checkpoint" in err and "none.pt" in err


def test_bbox_module_help():
    r = subprocess.run([sys.executable, "-m", "gcfeat.bbox", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--bidx" in r.stdout and "--tclass" in r.stdout
