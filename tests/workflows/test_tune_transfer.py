"""The calibrate-then-score protocol of `gcfeat tune` on a tiny synthetic set (val -> test)."""

import json
import math

import pandas as pd
import pytest
from helpers import make_tiny_surgical

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.boxes.calibration import ThresholdCalibration
from gcfeat.cam import GradCAM
from gcfeat.cli import tune as tune_cli
from gcfeat.data import build_dataset, collate
from gcfeat.metrics.localization import best_box_iou, gt_boxes
from gcfeat.models import load_checkpoint
from gcfeat.workflows.tune import run_tuning
from gcfeat.workflows.tune_transfer import BASELINES, MODES, PROTOCOLS, run_transfer

TS = "0.1:0.9:0.2"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_surgical(
        tmp_path_factory.mktemp("transfer"), frames=5, seed=1, model_seed=1, test_videos=1
    )


@pytest.fixture(scope="module")
def result(tiny):
    return run_transfer(
        tiny / "data",
        tiny / "ck.pt",
        TS,
        layers=["layer4", "fused"],
        batch_size=4,
        pred_threshold=0.3,
        min_gt=1,
        out=tiny / "out",
        progress=False,
    )


def test_table_has_every_source_mode_protocol_and_files(result, tiny):
    t = result.table
    sources = ["gradcam/layer4", "gradcam/fused", *BASELINES]
    assert {(s, m, p) for s, m, p in zip(t.source, t["mode"], t.protocol)} == {
        (s, m, p) for s in sources for m in MODES for p in PROTOCOLS
    }
    assert result.settings["frames"] == {"val": 5, "test": 5}
    assert result.chosen in ("gradcam/layer4", "gradcam/fused")
    csv = pd.read_csv(tiny / "out" / "tune_transfer.csv")
    assert len(csv) == len(t) and list(csv.columns) == list(t.columns)

    def strict(c):
        raise AssertionError(f"{c} in tune_transfer.json: not strict JSON")

    doc = json.loads((tiny / "out" / "tune_transfer.json").read_text(), parse_constant=strict)
    assert doc["chosen"] == result.chosen and len(doc["rows"]) == len(t)
    import matplotlib.image as mpimg

    assert mpimg.imread(tiny / "out" / "tune_transfer.png")[..., :3].std() > 0.02
    # the oracle is at least as good as the transferred T on the scored split
    for s in sources:
        assert (
            result.row(s, "pred", "oracle")["mean_iou"]
            >= result.row(s, "pred", "transfer")["mean_iou"] - 1e-9
        )


def test_thresholds_json_round_trip_and_calibrated_on_val(result, tiny):
    cal = ThresholdCalibration.load(tiny / "out" / "thresholds.json")
    mine = result.calibrations[result.chosen]
    assert cal.per_class == mine.per_class and cal.global_threshold == mine.global_threshold
    assert cal.meta["source"] == result.chosen and cal.meta["split"] == "val"
    assert cal.meta["box_maps"] == ("fused" if result.chosen.endswith("fused") else "cam")
    # the global T is the val study's best T (run_tuning on val: the same objective)
    _, rec = run_tuning(tiny / "data", tiny / "ck.pt", TS, split="val", pred_threshold=0.3, progress=False)
    assert result.calibrations["gradcam/layer4"].global_threshold == rec["overall"]["threshold"]


def test_transferred_rows_equal_an_independent_scoring_on_test(result, tiny):
    """global T: the plain threshold study on test at that T; per-class T: boxes made with the
    (K,) T tensor and scored by best_box_iou."""
    cal = result.calibrations["gradcam/layer4"]
    table, _ = run_tuning(tiny / "data", tiny / "ck.pt", TS, split="test", pred_threshold=0.3, progress=False)
    agg = table[(table.class_id == -1) & (table.threshold == cal.global_threshold)].iloc[0]
    row = result.row("gradcam/layer4", "pred", "transfer")
    assert row["mean_iou"] == pytest.approx(agg.mean_iou, abs=1e-9)
    assert row["hit_rate"] == pytest.approx(agg.hit_rate, abs=1e-9)
    model, info = load_checkpoint(tiny / "ck.pt")
    ds = build_dataset(tiny / "data", split="test", size=tuple(info.input_size), mean=info.mean, std=info.std)
    b = collate([ds[i] for i in range(len(ds))])
    res = GradCAM(model.eval(), [model.layer4]).explain(b["image"])
    T = cal.per_channel()
    pred = heatmap_to_boxes(
        res.heatmap, T, probs=res.logits.sigmoid(), pred_threshold=0.3, class_modes={10: "union"}
    )
    gt = gt_boxes(b["gt_boxes"], b["gt_labels"])
    keep = gt.label < 10
    gt = type(gt)(gt.xyxy[keep], gt.frame[keep], gt.label[keep], gt.score[keep])
    want = best_box_iou(pred, gt, num_classes=11).mean_iou
    got = result.row("gradcam/layer4", "pred", "transfer_per_class")["mean_iou"]
    assert not math.isnan(want) and got == pytest.approx(want, abs=1e-6)


def test_cli_protocol_and_errors(tiny, capsys):
    out = tiny / "cli"
    rc = tune_cli.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            "--calibrate-split",
            "val",
            "--score-split",
            "test",
            "--thresholds",
            TS,
            "--out",
            str(out),
            "--pred-threshold",
            "0.3",
            "--batch-size",
            "5",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and (out / "thresholds.json").exists() and "oracle" in text and "max20" in text
    with pytest.raises(SystemExit) as e:
        tune_cli.main(["--score-split", "test"])
    assert e.value.code == 2
    assert "give both" in capsys.readouterr().err
    rc = tune_cli.main(
        [
            "--data",
            str(tiny / "data"),
            "--checkpoint",
            str(tiny / "ck.pt"),
            "--calibrate-split",
            "val",
            "--score-split",
            "val",
            "--out",
            str(out / "x"),
        ]
    )
    assert rc == 2 and "both 'val'" in capsys.readouterr().err
    assert not (out / "x").exists()
