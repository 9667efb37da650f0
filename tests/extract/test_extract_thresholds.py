"""extract with per-class T (a thresholds JSON from tune) and boxes from fused maps."""

import numpy as np
import pytest
import torch

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.boxes.calibration import ThresholdCalibration
from gcfeat.cam import GradCAM
from gcfeat.cam.fusion import fuse_maps
from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, build_dataset, write_miccai18
from gcfeat.extract.pipeline import extract_dataset
from gcfeat.io import FeatureFile, SettingsMismatch
from gcfeat.models import build_classifier, load_checkpoint, save_checkpoint
from gcfeat.workflows.extract import ExtractError, extract

SIZE = (64, 80)
KW = dict(
    methods=["m2", "m3"],
    layout=(32, 4, 4),
    batch_size=3,
    num_workers=0,
    progress=False,
    pred_threshold=0.0,
    min_area=0,
    fold_bn=False,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("thr")
    write_miccai18(d / "data", num_videos=2, num_frames=3, size=SIZE, seed=3, progress=False)
    torch.manual_seed(0)
    save_checkpoint(
        d / "ck.pt",
        build_classifier("resnet18", 11).eval(),
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=SIZE,
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    model, info = load_checkpoint(d / "ck.pt")
    ds = build_dataset(d / "data", split="all", size=SIZE, with_gt=False)
    return d, model.eval(), info, ds


def rows(path, method="m2", field="box"):
    """{(video, frame, label): sorted rows of ``field``} of one method."""
    out = {}
    with FeatureFile(path) as ff:
        for v in ff:
            r = v.rows(method)
            for f, lab, val in zip(r["frame"], r["label"], r[field]):
                key = (v.name, int(v.frame_index[f]), int(lab))
                out.setdefault(key, []).append(tuple(np.round(val, 4).tolist()))
    return {k: sorted(v) for k, v in out.items()}


def test_per_class_thresholds_equal_scalar_runs(setup):
    d, model, info, ds = setup
    T = [0.3 if k % 2 == 0 else 0.6 for k in range(11)]
    extract_dataset(ds, model, info, out=str(d / "pc.h5"), class_thresholds=T, **KW)
    extract_dataset(ds, model, info, out=str(d / "a.h5"), threshold=0.3, **KW)
    extract_dataset(ds, model, info, out=str(d / "b.h5"), threshold=0.6, **KW)
    pc, a, b = rows(d / "pc.h5"), rows(d / "a.h5"), rows(d / "b.h5")
    want = {k: v for k, v in a.items() if k[2] % 2 == 0} | {k: v for k, v in b.items() if k[2] % 2}
    assert pc == want and a != b
    # m3's mask keeps --threshold (its features); its box is the union of the class's boxes
    assert rows(d / "pc.h5", "m3", "features") == rows(d / "a.h5", "m3", "features")
    with FeatureFile(d / "pc.h5") as ff:
        assert ff.attrs["thresholds"]["box_per_class"] == T
    with pytest.raises(SettingsMismatch, match="thresholds"):  # resume checks the per-class T
        extract_dataset(ds, model, info, out=str(d / "pc.h5"), class_thresholds=[0.3] * 11, **KW)


def test_fused_box_maps_and_thresholds_file(setup):
    d, model, info, ds = setup
    extract_dataset(ds, model, info, out=str(d / "cam.h5"), threshold=0.3, **KW)
    extract_dataset(ds, model, info, out=str(d / "fused.h5"), threshold=0.3, box_maps="fused", **KW)
    # the fused boxes, computed here: product of the layer2..4 Grad-CAM maps
    x = torch.stack([ds[i]["image"] for i in range(3)])
    res = GradCAM(model, [model.layer2, model.layer3, model.layer4]).explain(x)
    heat = fuse_maps(res.layer_heatmaps, SIZE, "product")
    bx = heatmap_to_boxes(heat, 0.3, min_area=0, class_modes={10: "union"})
    got = rows(d / "fused.h5")
    v, fi = ds[0]["video"], ds[0]["frame_index"]
    for lab in range(11):
        want = sorted(tuple(b) for b in bx.xyxy[(bx.frame == 0) & (bx.label == lab)].tolist())
        assert got.get((v, fi, lab), []) == want
    assert got != rows(d / "cam.h5")
    with FeatureFile(d / "fused.h5") as ff, FeatureFile(d / "cam.h5") as fc:
        assert ff.attrs["box_maps"]["maps"] == "fused"
        assert "box_maps" not in fc.attrs
        np.testing.assert_allclose(
            ff["seq_1"].rows("m3")["features"], fc["seq_1"].rows("m3")["features"], atol=1e-4
        )  # m3 keeps the layer4 heatmap
    with pytest.raises(SettingsMismatch):
        extract_dataset(ds, model, info, out=str(d / "fused.h5"), threshold=0.3, **KW)
    # a thresholds file calibrated on the fused maps: its per-class T and maps are applied
    cal = ThresholdCalibration(
        list(range(11)),
        list(SURGICAL_CLASSES),
        [0.3] * 11,
        [None] * 11,
        ["class"] * 11,
        [0] * 11,
        0.3,
        None,
        "mean_iou",
        "pred",
        [0.3],
        {"box_maps": "fused"},
    )
    cal.save(d / "t.json")
    r = extract(
        "surgical",
        d / "data",
        d / "ck.pt",
        str(d / "viafile.h5"),
        thresholds_file=d / "t.json",
        methods=["m2"],
        layout=(32, 4, 4),
        batch_size=3,
        num_workers=0,
        progress=False,
        pred_threshold=0.0,
        min_area=0,
        fold_bn=False,
    )
    assert r.stats["frames"] == 6
    with FeatureFile(d / "viafile.h5") as ff:
        assert ff.attrs["box_maps"]["maps"] == "fused"
        assert ff.attrs["thresholds"]["box_per_class"] == [0.3] * 11
    assert rows(d / "viafile.h5") == rows(d / "fused.h5")
    with pytest.raises(ExtractError, match="calibrated on the 'fused' maps"):
        extract(
            "surgical",
            d / "data",
            d / "ck.pt",
            str(d / "x.h5"),
            thresholds_file=d / "t.json",
            box_maps="cam",
            methods=["m2"],
            layout=(32, 4, 4),
        )
    assert not (d / "x.h5").exists()
