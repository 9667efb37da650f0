"""Exports load the way the downstream code loads them."""
import json
import math
import os
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from gcfeat.data.classes import SURGICAL_CLASSES
from gcfeat.cli.export import main
from gcfeat.io.exports import INTERACTION_CLASSES, interaction_class_map, pair_spatial_features
from gcfeat.io import FeatureWriter

ATTRS = {"classes": list(SURGICAL_CLASSES), "input_size": [256, 320], "architecture": "resnet50"}


@pytest.fixture()
def feats(tmp_path):
    """Two videos; frame f has labels [1, 8 (hook), 10 (tissue)] in m2 (tissue last in the
    file) and [10] only for f == 4 in m3."""
    p = tmp_path / "feats.h5"
    with FeatureWriter(p, ATTRS, {"m2": 512, "m3": 512}, 11) as w:
        for video in ("seq_1", "seq_3"):
            fi = np.array([2, 4, 6])
            m2 = SimpleNamespace(
                frame=np.repeat(np.arange(3), 3), label=np.tile([1, 8, 10], 3),
                box=np.tile([[10, 20, 50, 60], [100, 100, 140, 200], [0, 0, 320, 256]], (3, 1)),
                score=np.ones(9), features=np.arange(9 * 512).reshape(9, 512) / 7.0,
                empty=np.zeros(9, bool))
            m3 = SimpleNamespace(frame=np.array([1]), label=np.array([10]),
                                 box=np.array([[0, 0, 320, 256]]), score=np.ones(1),
                                 features=np.ones((1, 512)), empty=np.zeros(1, bool))
            w.write([video] * 3, fi, np.full((3, 11), 0.5), {"m2": m2, "m3": m3})
    return p


def test_captioning_export(feats, tmp_path):
    out = tmp_path / "cap"
    assert main(["captioning", str(feats), "--method", "m2", "--out", str(out)]) == 0
    index = json.load(open(out / "index.json"))
    assert len(index) == 6 and index[0] == {"id_path": "seq_1/frame002", "caption": ""}
    for e in index:
        x = np.load(out / f"{e['id_path']}_node_features.npy")
        assert x.shape == (3, 512) and x.dtype == np.float32
    x = np.load(out / "seq_3/frame004_node_features.npy")
    src = np.arange(9 * 512).reshape(9, 512)[3:6] / 7.0              # rows of frame 4: 1, 8, 10
    np.testing.assert_allclose(x, src[[2, 0, 1]], rtol=1e-6)         # tissue first
    # the captioning loader pads / truncates to 6 rows
    padded = np.zeros((6, 512), np.float32)
    padded[:len(x)] = x[:6]
    assert padded.shape == (6, 512)


def test_interaction_export(feats, tmp_path):
    out = tmp_path / "int"
    assert main(["interaction", str(feats), "--out", str(out)]) == 0
    f = out / "seq_1/vsgat/m2/frame006_features.hdf5"
    with h5py.File(f, "r") as h:
        assert set(h.keys()) == {"img_name", "node_num", "classes", "boxes", "node_features",
                                 "spatial_features"}
        assert h["img_name"][()].decode() == "frame006.png"
        n = int(h["node_num"][()])
        assert n == 2                                          # hook has no counterpart
        assert h["classes"][:].tolist() == [INTERACTION_CLASSES.index("kidney"),
                                            INTERACTION_CLASSES.index("prograsp_forceps")]
        assert h["boxes"].shape == (2, 4) and h["node_features"].shape == (2, 512)
        assert h["node_features"].dtype == np.float32
        assert h["spatial_features"].shape == (n * (n - 1), 16)
    with h5py.File(out / "seq_3/vsgat/m3/frame004_features.hdf5", "r") as h:
        assert int(h["node_num"][()]) == 1 and h["spatial_features"].shape == (0, 16)
    with h5py.File(out / "seq_3/vsgat/m3/frame002_features.hdf5", "r") as h:
        assert int(h["node_num"][()]) == 0 and h["node_features"].shape == (0, 512)


def test_class_map():
    m = interaction_class_map(SURGICAL_CLASSES)
    assert m[SURGICAL_CLASSES.index("tissue")] == 0
    assert m[SURGICAL_CLASSES.index("bipolar_forceps")] == 1
    assert m[SURGICAL_CLASSES.index("stapler")] == INTERACTION_CLASSES.index("stapler")
    assert m[SURGICAL_CLASSES.index("hook")] == -1 and m[SURGICAL_CLASSES.index("specimen_bag")] == -1


def test_pair_encoding_matches_loop():
    rng = np.random.default_rng(0)
    H, W = 256, 320
    xy = rng.uniform(0, 200, (4, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 100, (4, 2))], 1)
    boxes[3] = [0, 0, 0, 0]                                    # an empty (M3) box stays finite
    got = pair_spatial_features(boxes, (H, W))
    rows = []
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            bi, bj = boxes[i], boxes[j]
            g = lambda b: [b[0] / W, b[1] / H, b[2] / W, b[3] / H,
                           max(b[2] - b[0], 1) * max(b[3] - b[1], 1) / (W * H)]
            wi, hi = max(bi[2] - bi[0], 1), max(bi[3] - bi[1], 1)
            wj, hj = max(bj[2] - bj[0], 1), max(bj[3] - bj[1], 1)
            dcx = ((bj[0] + bj[2]) - (bi[0] + bi[2])) / 2 / W
            dcy = ((bj[1] + bj[3]) - (bi[1] + bi[3])) / 2 / H
            iw = max(0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            ih = max(0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            ai = (bi[2] - bi[0]) * (bi[3] - bi[1])
            aj = (bj[2] - bj[0]) * (bj[3] - bj[1])
            u = ai + aj - iw * ih
            rows.append(g(bi) + g(bj) + [dcx / (wi / W), dcy / (hi / H), math.log(wj / wi),
                                         math.log(hj / hi), iw * ih / u if u > 0 else 0,
                                         math.hypot(dcx, dcy)])
    np.testing.assert_allclose(got, np.array(rows), rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all()


def test_missing_method_is_a_clear_error(feats, tmp_path, capsys):
    assert main(["captioning", str(feats), "--method", "m1", "--out", str(tmp_path / "x")]) == 2
    assert "no method 'm1'" in capsys.readouterr().err
