"""The MRI demo (``python -m gcfeat.demo --task organ3d``) end to end on a tiny configuration."""

import json
import math
import re

import nibabel as nib
import numpy as np
import pytest

from gcfeat.cli.demo import main


def _finite(stats: dict) -> bool:
    return math.isfinite(stats["mean"]) and math.isfinite(stats["std"])


@pytest.mark.slow  # ~30 s alone on 2 cores: 3D convolutions train slowly on CPU
def test_organ3d_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "--task",
            "organ3d",
            "--out",
            str(out),
            "--n",
            "11",
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--limit",
            "1",
            "--n-steps",
            "6",
            "--cams",
            "gradcam",
            "scorecam",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "where everything is" in printed and "random" in printed

    s = json.loads((out / "summary.json").read_text())
    # one volume per class in each split (n_val, n_test are at least 11)
    assert (s["train_samples"], s["val_samples"], s["test_samples"]) == (11, 11, 11)
    assert s["arch"] == "resnet3d_18_slim" and len(s["history"]) == 1
    assert (out / "organ3d_resnet3d_18_slim_best.pt").is_file()
    assert (out / "data" / "organmnist3d.npz").is_file()
    c = s["classification"]
    assert 0.0 <= c["accuracy"] <= 1.0 and math.isfinite(c["roc_auc"])

    assert set(s["faithfulness"]) == {"random", "gradcam", "scorecam"}
    assert s["faithfulness_setup"]["points"] == 7 and s["faithfulness_setup"]["n"] == 1
    for name, f in s["faithfulness"].items():
        for key in ("dauc_prob", "iauc_prob", "dauc_correct", "iauc_correct"):
            assert f[key]["n"] == 1 and _finite(f[key]), (name, key)
            assert 0.0 <= f[key]["mean"] <= 1.0
        loc = s["localisation"][name]
        assert loc["pointing_game"]["mean"] in (0.0, 1.0) and _finite(loc["iou"])

    ev = out / "eval"
    assert json.loads((ev / "metrics.json").read_text())["n"] == 11
    for f in ("summary.md", "deletion_mean_curves.png", "insertion_mean_curves.png"):
        assert (ev / f).is_file(), f
    # --limit 1: one sample of the first class (balanced subset, seeded), exported by its index
    (i,) = s["samples"]["indices"]
    counts = list(s["samples"]["per_class"].values())
    assert counts[0] == 1 and sum(counts) == 1
    # the exported CAM volume reopens with the volume's shape and finite values in [0, 1]
    cam = np.asarray(nib.load(ev / "volumes" / f"{i:04d}_gradcam.nii.gz").dataobj)
    assert cam.shape == (28, 28, 28) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert (ev / "volumes" / f"{i:04d}_scorecam.html").is_file()
    report = (out / "report.md").read_text()
    assert "pointing game" in report and "scorecam" in report and "random" in report
    # the features stage: every test volume in the HDF5 layout, 3D boxes, one m3 row each
    from gcfeat.io import FeatureFile

    with FeatureFile(out / "features.h5") as ff:
        assert ff.attrs["task"] == "organ3d" and ff.num_frames() == 11
        m3 = ff["test"].rows("m3")
        assert len(m3["label"]) == 11 and ff["test"].rows("m2")["box"].shape[1] == 6
        assert m3["label"].tolist() == ff["test"].class_prob.argmax(1).tolist()
    assert s["features"]["rows"]["m3"] == 11 and "features.h5" in report

    # the last stage: report.html, one montage per test volume, every image on disk
    html = (out / "report.html").read_text()
    assert s["report_html"] == str(out / "report.html") and "6/6 report" in printed
    assert len(re.findall(r'<figure class="item', html)) == 11
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert refs and all((out / r).is_file() for r in refs), refs

    # a second run reuses the data and, with --skip-train, the checkpoint
    rc = main(
        [
            "--task",
            "organ3d",
            "--out",
            str(out),
            "--n",
            "11",
            "--skip-train",
            "--limit",
            "1",
            "--n-steps",
            "4",
            "--cams",
            "gradcam",
            "--exports",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed and "--skip-train: reusing" in printed


def test_task_demo_rejects_unknown_arch(tmp_path, capsys):
    assert (
        main(["--task", "organ3d", "--out", str(tmp_path / "x"), "--arch", "resnet50", "--no-progress"]) == 2
    )
    assert "not a organ3d model" in capsys.readouterr().err
    assert not (tmp_path / "x" / "data").exists()  # rejected before any data is written
    with pytest.raises(SystemExit):
        main(["--arch", "resnet3d_18_slim", "--out", str(tmp_path)])
