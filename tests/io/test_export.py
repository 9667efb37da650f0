"""Exports load the way the downstream code loads them."""

import json
import math
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from gcfeat.cli.export import main
from gcfeat.data.classes import SURGICAL_CLASSES
from gcfeat.io import FeatureWriter
from gcfeat.io.exports import INTERACTION_CLASSES, interaction_class_map, pair_spatial_features

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
                frame=np.repeat(np.arange(3), 3),
                label=np.tile([1, 8, 10], 3),
                box=np.tile([[10, 20, 50, 60], [100, 100, 140, 200], [0, 0, 320, 256]], (3, 1)),
                score=np.ones(9),
                features=np.arange(9 * 512).reshape(9, 512) / 7.0,
                empty=np.zeros(9, bool),
            )
            m3 = SimpleNamespace(
                frame=np.array([1]),
                label=np.array([10]),
                box=np.array([[0, 0, 320, 256]]),
                score=np.ones(1),
                features=np.ones((1, 512)),
                empty=np.zeros(1, bool),
            )
            w.write(
                [video] * 3, fi, np.full((3, 11), 0.5), {"m2": m2, "m3": m3}, source_sizes=[(1024, 1280)] * 3
            )
    return p


@pytest.fixture()
def data(tmp_path):
    """Scene graphs of those frames: kidney + prograsp_forceps (Grasping); no caption at 4."""
    from gcfeat.data.scene_graph import SceneGraph, SceneObject, write_scene_graph

    root = tmp_path / "data"
    for video in ("seq_1", "seq_3"):
        for f in (2, 4, 6):
            g = SceneGraph(
                [
                    SceneObject("kidney", (0, 0, 1279, 1023)),
                    SceneObject("prograsp_forceps", (40, 80, 199, 239), "Grasping"),
                ],
                None if f == 4 else f"prograsp forceps grasping tissue {f}",
            )
            write_scene_graph(root / video / "xml" / f"frame{f:03d}.xml", g)
    return root


def test_captioning_export(feats, data, tmp_path):
    out = tmp_path / "cap"
    assert main(["captioning", str(feats), "--data", str(data), "--method", "m2", "--out", str(out)]) == 0
    ann = out / "annotations"
    caps = {s: json.load(open(ann / f"captions_{s}.json")) for s in ("train", "val")}
    ids = {s: json.load(open(ann / f"WithCaption_id_path_{s}.json")) for s in ("train", "val")}
    assert (
        [e["id_path"] for e in caps["val"]]
        == ids["val"]
        == ["seq_1/gcfeat_m2/frame002_node_features.npy", "seq_1/gcfeat_m2/frame006_node_features.npy"]
    )
    assert caps["val"][1]["caption"] == "prograsp forceps grasping tissue 6"
    assert len(ids["train"]) == 2 and ids["train"][0].startswith("seq_3/")
    for s_ in ("train", "val"):
        for i in ids[s_]:
            x = np.load(out / i)
            assert x.shape == (3, 512) and x.dtype == np.float32
    x = np.load(out / "seq_3/gcfeat_m2/frame004_node_features.npy")  # written, not listed
    src = np.arange(9 * 512).reshape(9, 512)[3:6] / 7.0  # rows of frame 4: 1, 8, 10
    np.testing.assert_allclose(x, src[[2, 0, 1]], rtol=1e-6)  # tissue first


def test_interaction_export(feats, data, tmp_path, capsys):
    out = tmp_path / "int"
    assert main(["interaction", str(feats), "--data", str(data), "--out", str(out)]) == 0
    f = out / "m2/seq_1/vsgat/m2/frame006_features.hdf5"
    with h5py.File(f, "r") as h:
        assert set(h.keys()) == {
            "img_name",
            "node_num",
            "classes",
            "boxes",
            "edge_labels",
            "node_features",
            "spatial_features",
        }
        assert h["img_name"][()].decode() == "frame006"
        n = int(h["node_num"][()])
        assert n == 2  # hook has no counterpart
        assert h["classes"][:].tolist() == [
            INTERACTION_CLASSES.index("kidney"),
            INTERACTION_CLASSES.index("prograsp_forceps"),
        ]
        # input (256, 320) -> source (1024, 1280): x4, inclusive end
        assert h["boxes"][:].tolist() == [[0, 0, 1279, 1023], [40, 80, 199, 239]]
        assert h["edge_labels"][:].tolist() == [[0, 1] + [0] * 11]  # Grasping
        assert h["node_features"].shape == (2, 512)
        assert h["spatial_features"].shape == (n * (n - 1), 16)
    assert (out / "m2/seq_1/xml/frame006.xml").is_file()
    # m3 holds one node (tissue) at frame 4 and none elsewhere: every frame skipped, none listed
    assert not (out / "m3/seq_3/xml").exists() or not list((out / "m3/seq_3/xml").iterdir())
    assert "m3: 0 frames" in capsys.readouterr().out


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
    boxes[3] = [0, 0, 0, 0]  # an empty (M3) box stays finite
    got = pair_spatial_features(boxes, (H, W))
    rows = []
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            bi, bj = boxes[i], boxes[j]
            g = lambda b: [
                b[0] / W,
                b[1] / H,
                b[2] / W,
                b[3] / H,
                max(b[2] - b[0], 1) * max(b[3] - b[1], 1) / (W * H),
            ]
            wi, hi = max(bi[2] - bi[0], 1), max(bi[3] - bi[1], 1)
            wj, hj = max(bj[2] - bj[0], 1), max(bj[3] - bj[1], 1)
            dcx = ((bj[0] + bj[2]) - (bi[0] + bi[2])) / 2 / W
            dcy = ((bj[1] + bj[3]) - (bi[1] + bi[3])) / 2 / H
            iw = max(0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            ih = max(0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            ai = (bi[2] - bi[0]) * (bi[3] - bi[1])
            aj = (bj[2] - bj[0]) * (bj[3] - bj[1])
            u = ai + aj - iw * ih
            rows.append(
                g(bi)
                + g(bj)
                + [
                    dcx / (wi / W),
                    dcy / (hi / H),
                    math.log(wj / wi),
                    math.log(hj / hi),
                    iw * ih / u if u > 0 else 0,
                    math.hypot(dcx, dcy),
                ]
            )
    np.testing.assert_allclose(got, np.array(rows), rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all()


def test_missing_method_is_a_clear_error(feats, tmp_path, capsys):
    assert (
        main(
            [
                "captioning",
                str(feats),
                "--data",
                str(tmp_path),
                "--method",
                "m1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "no method 'm1'" in capsys.readouterr().err
