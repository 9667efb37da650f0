"""The main job end to end on a tiny configuration: every stage runs and writes its artefact."""

import json
import re

import h5py
import numpy as np
import pytest

from gcfeat.cli.demo import main


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "--out",
            str(out),
            "--videos",
            "6",
            "--frames",
            "10",
            "--size",
            "64x80",
            "--arch",
            "resnet18",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            "--thresholds",
            "0.1:0.9:0.2",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "where everything is" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_frames"] == 40 and summary["val_frames"] == 20
    assert 0.0 <= summary["val_mAP"] <= 1.0
    assert min(abs(summary["best_threshold"] - t) for t in (0.1, 0.3, 0.5, 0.7, 0.9)) < 1e-9
    for key in ("bbox_figure", "features", "tune_dir", "captioning"):
        assert (out / summary[key].split("/")[-1]).exists(), key
    assert (tmp_path / "ck" / "demo_resnet18_best.pt").exists()
    assert (out / "train_log.csv").read_text().count("\n") == 2  # header + 1 epoch

    # the figure is a real picture, not a blank canvas
    import cv2

    fig = cv2.imread(summary["bbox_figure"])
    assert fig is not None and fig.std() > 10

    # the feature file holds every val frame once, for every method
    with h5py.File(out / "features.h5", "r") as f:
        frames = sum(len(f[v]["frame_index"]) for v in f)
        assert frames == 20
        for v in f:
            for m in ("m1", "m2", "m3"):
                feats = f[v][m]["features"][...]
                assert feats.shape[1] == 512 and np.isfinite(feats).all()
    ann = out / "captioning" / "annotations"
    val = json.loads((ann / "WithCaption_id_path_val.json").read_text())
    exports = summary["exports"]
    assert len(val) == exports["captioning"]["val"]
    assert exports["captioning"]["val"] + exports["captioning"]["skipped_no_caption"] == 20
    assert (out / "captioning" / val[0]).is_file()
    inter = exports["interaction"]
    for m in ("m1", "m2", "m3"):
        listed = list((out / "interaction" / m).glob("seq_*/xml/*.xml"))
        assert len(listed) == inter["frames"][m] and inter["frames"][m] + inter["skipped_few_nodes"][m] == 20
    report = (out / "report.md").read_text()
    assert "validation mAP" in report and "threshold" in report and "report.html" in report

    # the transfer stage: 2 held-out test videos, T calibrated on val, used by extract
    assert summary["test_frames"] == 20
    tr = summary["transfer"]
    assert tr["chosen"] in ("gradcam/layer4", "gradcam/fused") and tr["box_maps"] in ("cam", "fused")
    assert {(r["source"], r["mode"], r["protocol"]) for r in tr["rows"]} >= {
        ("gradcam/layer4", "pred", "transfer"),
        ("gradcam/fused", "gt_known", "oracle"),
        ("otsu", "pred", "transfer"),
        ("max20", "pred", "transfer"),
        ("random", "pred", "oracle"),
    }
    T = list(tr["per_class_thresholds"].values())
    from gcfeat.io import FeatureFile

    with FeatureFile(out / "features.h5") as ff:
        assert ff.attrs["thresholds"]["box_per_class"] == pytest.approx(T)
        assert ff.attrs.get("box_maps", {"maps": "cam"})["maps"] == tr["box_maps"]
    assert "T calibrated on val" in report and "per-class T calibrated on val" in printed

    # the last stage: report.html with one gallery item per val frame, every image on disk
    html = (out / "report.html").read_text()
    assert summary["report_html"] == str(out / "report.html")
    assert summary["seconds"]["report_html"] > 0 and "9/9 report" in printed
    assert f"report             {out / 'report.html'}" in printed
    assert len(re.findall(r'<figure class="item', html)) == 20
    assert 'id="gallery"' in html and "Split val: 20 of 20 frames" in html
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert refs and all((out / r).is_file() for r in refs), refs


def test_report_stage_failure_leaves_the_run(tmp_path, monkeypatch, capsys):
    """A report that breaks (here: a bug inside the builder) is printed and handed back, the
    run's files stay, summary.json records why; the demo raises it after its table."""
    from gcfeat.workflows import common

    def broken(*a, **k):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(common, "build_run_report", broken)
    (tmp_path / "features.h5").write_bytes(b"x")
    summary = {"out": str(tmp_path), "seconds": {"data": 1.0}}
    err = common.html_report_stage("8/8 report", tmp_path, summary, progress=False)
    assert isinstance(err, RuntimeError) and "renderer bug" in str(err)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["report_html"] is None and "renderer bug" in saved["report_html_error"]
    assert saved["seconds"]["data"] == 1.0 and "report_html" in saved["seconds"]
    assert (tmp_path / "features.h5").read_bytes() == b"x"
    assert "report.html not written" in capsys.readouterr().err
