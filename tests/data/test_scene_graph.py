"""Scene-graph XML: the real format reads, the synthetic writer writes it from the exact truth."""

import shutil

import cv2
import numpy as np
import pytest

from gcfeat.data import SURGICAL_CLASSES, DataError, Miccai18Dataset, read_frame_gt
from gcfeat.data.scene_graph import (
    ACTION_CLASSES,
    SceneGraph,
    SceneObject,
    edge_labels,
    read_scene_graph,
    read_sequence,
    write_scene_graph,
)
from gcfeat.data.synthetic import generate_video, write_miccai18

# Laid out as the EndoVis18 scene-graph files are (no filename / size, whitespace in texts).
REAL = """<?xml version="1.0" ?>
<annotation>
\t<objects>
\t\t<name> kidney </name>
\t\t<bndbox><xmin>0</xmin><ymin>120</ymin><xmax>1279</xmax><ymax>1023</ymax></bndbox>
\t\t<interaction>Idle</interaction>
\t</objects>
\t<objects>
\t\t<name>monopolar_curved_scissors</name>
\t\t<bndbox><xmin>700</xmin><ymin>10</ymin><xmax>1100</xmax><ymax>400</ymax></bndbox>
\t\t<interaction> Cutting</interaction>
\t</objects>
\t<objects>
\t\t<name>maryland_dissector</name>
\t\t<bndbox><xmin>10</xmin><ymin>500</ymin><xmax>300</xmax><ymax>900</ymax></bndbox>
\t\t<interaction>Retraction</interaction>
\t</objects>
\t<caption>monopolar curved scissors cutting kidney and maryland dissector retracting</caption>
</annotation>
"""


def test_reads_the_real_layout(tmp_path):
    p = tmp_path / "frame080.xml"
    p.write_text(REAL)
    g = read_scene_graph(p)
    assert g.names == ["kidney", "monopolar_curved_scissors", "maryland_dissector"]
    assert g.objects[1].box == (700, 10, 1100, 400)
    assert g.objects[1].box_exclusive == (700, 10, 1101, 401)
    assert g.objects[1].interaction == "Cutting" and g.caption.startswith("monopolar")
    e = g.edge_labels()
    assert e.shape == (2, 13) and e.dtype == np.float64
    assert e.argmax(1).tolist() == [ACTION_CLASSES.index("Cutting"), ACTION_CLASSES.index("Retraction")]
    assert read_sequence(tmp_path, ".", folder=".")[80][1].names == g.names


def test_round_trip_and_no_caption(tmp_path):
    g = SceneGraph(
        [SceneObject("kidney", (0, 0, 159, 127)), SceneObject("stapler", (3, 4, 50, 60), "Staple")],
        None,
        (128, 160),
        "frame001.png",
    )
    write_scene_graph(tmp_path / "a.xml", g)
    back = read_scene_graph(tmp_path / "a.xml")
    assert back.objects == g.objects and back.caption is None and back.size == (128, 160)


@pytest.mark.parametrize(
    "text,match",
    [
        (REAL.replace("Cutting", "Slicing"), "interaction 'Slicing'"),
        (REAL.replace("<xmin>700</xmin>", "<xmin>7.5</xmin>"), "non-integer"),
        (REAL[:200], "not well-formed"),
    ],
)
def test_bad_files_name_themselves(tmp_path, text, match):
    p = tmp_path / "frame001.xml"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_scene_graph(p)
    assert str(p) in str(e.value)


def test_edge_rule_is_the_authors():
    """Feature_extraction.ipynb: t kidney objects, sum_{k<t}(n-k-1) rows, row e is the action
    of object t + e (with 2 kidneys it indexes past the end: refused)."""
    assert edge_labels(["kidney"], ["Idle"]).shape == (0, 13)
    e = edge_labels(["kidney", "a", "b", "c"], ["Idle", "Grasping", "Idle", "Suction"])
    assert e.argmax(1).tolist() == [1, 0, 7] and e.sum() == 3
    with pytest.raises(DataError, match="kidney"):
        edge_labels(["kidney", "kidney", "a"], ["Idle", "Idle", "Cutting"])


def test_synthetic_writes_scene_graphs_and_masks(tmp_path):
    size = (96, 120)
    write_miccai18(tmp_path, num_videos=2, num_frames=4, size=size, seed=3, progress=False)
    video = generate_video((3, 1), 4, size, class_queue=[])
    n_caption = 0
    for f in range(4):
        g = read_scene_graph(tmp_path / "seq_1" / "xml" / f"frame{f:03d}.xml")
        gt = read_frame_gt(tmp_path / "groundtruth" / "seq_1" / f"frame{f:03d}.json")
        assert g.names[0] == "kidney" and g.objects[0].box == (0, 0, size[1] - 1, size[0] - 1)
        want = {
            SURGICAL_CLASSES[c]: b
            for c, b in gt.boxes.items()
            if SURGICAL_CLASSES[c] not in ("tissue", "hook", "specimen_bag")
        }
        assert {o.name: o.box_exclusive for o in g.objects[1:]} == want
        assert all(o.interaction in ACTION_CLASSES for o in g.objects)
        n_caption += g.caption is not None
        assert (g.caption is None) == all(o.interaction == "Idle" for o in g.objects[1:])
        mask = cv2.imread(str(tmp_path / "seq_1" / "annotations" / f"frame{f:03d}.png"), cv2.IMREAD_UNCHANGED)
        frame = video[f]
        assert mask.shape == size and mask.dtype == np.uint8
        for c, m in frame.masks.items():
            assert (mask[m] == (0 if SURGICAL_CLASSES[c] == "tissue" else c + 1)).all()
    assert n_caption > 0


def test_dataset_reads_gt_from_xml_and_gives_source_size(tmp_path):
    size = (96, 120)
    write_miccai18(tmp_path, num_videos=2, num_frames=3, size=size, seed=1, progress=False)
    with_json = list(Miccai18Dataset(tmp_path, split="all", size=(48, 60)))
    shutil.rmtree(tmp_path / "groundtruth")
    (tmp_path / "gt_bbox").rename(tmp_path / "gt_bbox_off")
    with_xml = Miccai18Dataset(tmp_path, split="all", size=(48, 60))
    for a, b in zip(with_json, with_xml):
        assert b["source_size"] == size
        keep = ~np.isin(
            a["gt_labels"].numpy(), [SURGICAL_CLASSES.index("hook"), SURGICAL_CLASSES.index("specimen_bag")]
        )
        assert b["gt_labels"].tolist() == a["gt_labels"].numpy()[keep].tolist()
        np.testing.assert_allclose(b["gt_boxes"].numpy(), a["gt_boxes"].numpy()[keep])
