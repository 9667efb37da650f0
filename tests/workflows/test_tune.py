"""`python -m gcfeat.tune` / run_tuning end to end on a tiny synthetic set and a resnet18."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_surgical

from gcfeat.cli import tune
from gcfeat.workflows import tune as tune_workflow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_surgical(tmp_path_factory.mktemp("tune"), frames=5, seed=1, model_seed=1)


def test_tune_cli_writes_csv_plots_json(tiny, capsys):
    out = tiny / "out"
    rc = tune.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            "--thresholds",
            "0.1:0.9:0.2",
            "--out",
            str(out),
            "--batch-size",
            "3",
            "--pred-threshold",
            "0.3",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    df = pd.read_csv(out / "tune_thresholds.csv")
    Ts = [0.1, 0.3, 0.5, 0.7, 0.9]
    expected = {(t, k) for t in Ts for k in list(range(11)) + [-1]}
    got = {(round(t, 6), int(k)) for t, k in zip(df.threshold, df.class_id)}
    assert got == expected and len(df) == len(expected)  # every T x class, once
    assert set(df[df.class_id == -1].class_name) == {"all_instruments"}
    assert (df.n_frames == 5).all()  # one split: the val sequence
    rec = json.loads((out / "tune_recommendation.json").read_text())
    assert rec["overall"]["name"] == "all_instruments" and rec["overall"]["threshold"] in Ts
    assert rec["settings"]["frames"] == 5 and rec["settings"]["method"] == "gradcam"
    import matplotlib.image as mpimg

    for png in [out / "tune_curves.png", out / "tune_tissue.png"]:
        assert mpimg.imread(png)[..., :3].std() > 0.02
    assert f"recommended T overall (all_instruments, by mean_iou): {rec['overall']['threshold']:.2f}" in text
    assert "best T per class" in text


def test_run_tuning_api_matches_csv_and_gt_sources(tiny):
    """The API's table equals the CLI's CSV; ground truth from the per-frame JSON files and
    from MICCAI-style gt_bbox/seq_N.txt files gives the same study."""
    table, rec = tune_workflow.run_tuning(
        tiny / "data",
        tiny / "ck.pt",
        "0.2,0.5",
        batch_size=4,
        pred_threshold=0.3,
        progress=False,
        out=tiny / "api_out",
    )
    assert list(table.threshold.unique()) == [0.2, 0.5]
    csv = pd.read_csv(rec["files"]["csv"])
    assert list(csv.columns) == list(table.columns) and list(csv.class_name) == list(table.class_name)
    num = table.select_dtypes("number").columns
    np.testing.assert_allclose(csv[num].to_numpy(float), table[num].to_numpy(float), rtol=1e-5)
    only_txt = tiny / "data_txt"
    if not only_txt.exists():
        shutil.copytree(tiny / "data", only_txt)
        shutil.rmtree(only_txt / "groundtruth")
    table2, rec2 = tune_workflow.run_tuning(
        only_txt, tiny / "ck.pt", "0.2,0.5", batch_size=2, pred_threshold=0.3, progress=False
    )
    num = ["n_gt", "n_pred", "tp", "mean_iou", "hit_rate", "pointing_game"]
    np.testing.assert_allclose(table[num].to_numpy(float), table2[num].to_numpy(float), atol=1e-6)
    assert rec2["overall"]["threshold"] == rec["overall"]["threshold"]
    # tissue (ground truth = whole frame, one union box) and the instruments have GT rows
    assert table[(table.class_name == "tissue")].n_gt.iloc[0] == 5


def test_run_tuning_equals_sweep_over_api_heatmaps(tiny):
    """Independent path: GradCAM over the whole split at once + evaluate_thresholds."""
    from gcfeat.boxes.evaluate import evaluate_thresholds
    from gcfeat.cam import GradCAM
    from gcfeat.data import build_dataset, collate
    from gcfeat.models import load_checkpoint

    model, info = load_checkpoint(tiny / "ck.pt")
    model.eval()
    ds = build_dataset(tiny / "data", "auto", "val", size=info.input_size, mean=info.mean, std=info.std)
    batch = collate([ds[i] for i in range(len(ds))])
    res = GradCAM(model, [model.layer4]).explain(batch["image"])
    ref = evaluate_thresholds(
        res.heatmap,
        torch.sigmoid(res.logits),
        batch["gt_boxes"],
        batch["gt_labels"],
        [0.3, 0.6],
        class_names=list(info.classes),
        class_modes={10: "union"},
        pred_threshold=0.3,
        aggregate={"all_instruments": list(range(10))},
    )
    table, _ = tune_workflow.run_tuning(
        tiny / "data", tiny / "ck.pt", [0.3, 0.6], batch_size=3, pred_threshold=0.3, progress=False
    )
    pd.testing.assert_frame_equal(table, ref, check_exact=False, atol=1e-6)


def test_tune_errors(tiny, capsys):
    rc = tune.main(["--data", str(tiny / "data"), "--checkpoint", str(tiny / "nope.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "scripts/demo" in err and "nope.pt" in err
    rc = tune.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            "--thresholds",
            "0.5:2:0.5",
            "--out",
            str(tiny / "o"),
        ]
    )
    assert rc == 2 and "thresholds" in capsys.readouterr().err
    no_gt = tiny / "data_nogt"
    if not no_gt.exists():
        shutil.copytree(tiny / "data", no_gt)
        shutil.rmtree(no_gt / "groundtruth")
        shutil.rmtree(no_gt / "gt_bbox")
        for xml in no_gt.glob("seq_*/xml"):  # scene graphs carry boxes too
            shutil.rmtree(xml)
    rc = tune.main(["--data", str(no_gt), "--checkpoint", str(tiny / "ck.pt"), "--out", str(tiny / "o")])
    assert rc == 2 and "ground-truth boxes" in capsys.readouterr().err
