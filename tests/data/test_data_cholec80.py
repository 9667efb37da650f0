"""Cholec80 layout: mp4 + 1 fps tool files -> Cholec80Dataset, frame accuracy, clear errors."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from gcfeat.cli.synthetic import main
from gcfeat.data import (
    CHOLEC80_TO_SURGICAL,
    CHOLEC80_TOOLS,
    SURGICAL_CLASSES,
    TISSUE,
    Cholec80Dataset,
    DataError,
    build_dataset,
    cholec80_splits,
    detect_layout,
    make_loader,
    read_frames,
    write_cholec80,
)
from gcfeat.data.cholec80 import read_tool_annotation
from gcfeat.data.synthetic import CHOLEC80_CLASSES, dataset_videos
from gcfeat.data.video import iter_frames

SIZE = (64, 80)
N_VIDEOS, N_FRAMES = 2, 60  # annotated frames 0, 25, 50
SCENE = dict(motion_period=6)  # brisk motion: neighbouring frames differ clearly


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("c80")
    summary = write_cholec80(root, N_VIDEOS, N_FRAMES, SIZE, seed=5, progress=False, **SCENE)
    frames = {
        name: list(video)
        for name, video in dataset_videos("cholec80", N_VIDEOS, N_FRAMES, SIZE, seed=5, **SCENE)
    }
    return root, summary, frames


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def _mad(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_files_in_the_real_layout(written):
    root, summary, frames = written
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["video01.mp4", "video02.mp4"]
    text = (root / "tool_annotations" / "video01-tool.txt").read_text().splitlines()
    assert text[0].split("\t") == [
        "Frame",
        "Grasper",
        "Bipolar",
        "Hook",
        "Scissors",
        "Clipper",
        "Irrigator",
        "SpecimenBag",
    ]
    assert [int(r.split("\t")[0]) for r in text[1:]] == [0, 25, 50]
    for row in text[1:]:  # each column is its mapped class's label
        f, *flags = row.split("\t")
        ref = frames["video01"][int(f)].labels
        assert [int(v) for v in flags] == [
            int(ref[SURGICAL_CLASSES.index(CHOLEC80_TO_SURGICAL[t])]) for t in CHOLEC80_TOOLS
        ]
    assert sorted(p.name for p in (root / "groundtruth" / "video02").iterdir()) == [
        "frame000000.json",
        "frame000025.json",
        "frame000050.json",
    ]
    cap = cv2.VideoCapture(str(root / "videos" / "video01.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == 25
    cap.release()
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["layout"] == "cholec80" and meta["splits"] == {"train": ["video01"], "val": ["video02"]}
    assert summary["frames"] == N_VIDEOS * 3
    assert detect_layout(root) == "cholec80"
    # Only classes with a Cholec80 column are ever drawn.
    drawn = {c for fr in frames.values() for f in fr for c in np.flatnonzero(f.labels)}
    assert drawn <= set(CHOLEC80_CLASSES) | {TISSUE}


def test_video_frames_match_the_generated_frames_at_the_right_numbers(written):
    root, _, frames = written
    gen = frames["video01"]
    wanted = [0, 1, 24, 25, 26, 37, 50, 59]
    decoded = read_frames(root / "videos" / "video01.mp4", wanted)
    assert decoded.shape == (len(wanted), *SIZE, 3) and decoded.dtype == np.uint8
    for img, f in zip(decoded, wanted):
        own = _mad(img, gen[f].image)
        assert own < 8, (f, own)  # codec tolerance
        for g in (f - 1, f + 1):  # and not a neighbour
            if 0 <= g < N_FRAMES:
                assert own < _mad(img, gen[g].image), (f, g)


def test_read_frames_any_order_matches_naive_sequential_read(written):
    path = written[0] / "videos" / "video02.mp4"
    cap = cv2.VideoCapture(str(path))
    naive = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        naive.append(frame[..., ::-1])
    cap.release()
    assert len(naive) == N_FRAMES
    order = [33, 2, 59, 2, 0]
    got = read_frames(path, order)
    for img, f in zip(got, order):
        np.testing.assert_array_equal(img, naive[f])
    assert [f for f, _ in iter_frames(path, [5, 1, 5])] == [1, 5]


def test_dataset_round_trip(written):
    root, _, frames = written
    ds = Cholec80Dataset(root, size=(32, 40))
    assert len(ds) == 6
    samples = list(ds)
    assert [(s["video"], s["frame_index"]) for s in samples] == [
        (v, f) for v in ("video01", "video02") for f in (0, 25, 50)
    ]
    for s in samples:
        ref = frames[s["video"]][s["frame_index"]]
        assert s["image"].shape == (3, 32, 40) and s["image"].dtype == torch.float32
        np.testing.assert_array_equal(s["labels"].numpy(), ref.labels)
        keys = sorted(ref.boxes)
        assert s["gt_labels"].tolist() == keys
        np.testing.assert_allclose(
            s["gt_boxes"].numpy(), np.array([ref.boxes[k] for k in keys], np.float32) / 2
        )
    np.testing.assert_array_equal(ds.labels, np.stack([s["labels"].numpy() for s in samples]))


def test_loader_with_workers_yields_every_frame_once(written):
    root = written[0]
    ds = build_dataset(root, "auto", "all", (32, 40), with_gt=False)
    assert isinstance(ds, Cholec80Dataset)
    assert ds.shards(2) in ([[0], [1]], [[1], [0]]) and sorted(sum(ds.shards(3), [])) == [0, 1]
    loader = make_loader(ds, batch_size=2, num_workers=2, shuffle=True)
    got = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 32, 40) and "gt_boxes" not in batch
        got += list(zip(batch["video"], batch["frame_index"]))
    assert sorted(got) == [(v, f) for v in ("video01", "video02") for f in (0, 25, 50)]


def test_splits_videos_and_fps(written):
    root = written[0]
    assert [v["name"] for v in Cholec80Dataset(root, split="train", size=SIZE).videos] == ["video01"]
    assert [v["name"] for v in Cholec80Dataset(root, split="val", size=SIZE).videos] == ["video02"]
    ds = Cholec80Dataset(root, videos=[2], size=SIZE, fps=0.5)
    assert [s["frame_index"] for s in ds] == [0, 50]
    with pytest.raises(ValueError, match="fps=2"):
        Cholec80Dataset(root, size=SIZE, fps=2)
    with pytest.raises(DataError, match="video07"):
        Cholec80Dataset(root, videos=["video07"], size=SIZE)
    assert cholec80_splits(range(1, 81)) == {"train": list(range(1, 41)), "val": list(range(41, 81))}
    assert cholec80_splits(range(1, 9)) == {"train": list(range(1, 7)), "val": [7, 8]}


def test_cli_cholec80(tmp_path, capsys):
    assert (
        main(
            [
                "--layout",
                "cholec80",
                "--out",
                str(tmp_path / "c"),
                "--videos",
                "1",
                "--frames",
                "30",
                "--size",
                "32x40",
            ]
        )
        == 0
    )
    assert "2 annotated frames" in capsys.readouterr().out
    assert len(Cholec80Dataset(tmp_path / "c", size=(32, 40))) == 2


# -- errors ------------------------------------------------------------------------------------


def test_error_truncated_corrupt_and_empty_video(written, tmp_path):
    copy = _copy(written[0], tmp_path)
    video = copy / "videos" / "video01.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # truncated: no index at the end
    with pytest.raises(DataError, match=r"video01\.mp4: cannot be opened as a video"):
        Cholec80Dataset(copy, size=SIZE)
    with pytest.raises(DataError, match=r"video01\.mp4: cannot be opened"):
        read_frames(video, [0])
    video.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"video01\.mp4: cannot be opened"):
        read_frames(video, [0])
    video.write_bytes(b"")
    with pytest.raises(DataError, match=r"video01\.mp4: empty file"):
        Cholec80Dataset(copy, size=SIZE)
    video.unlink()
    with pytest.raises(DataError, match=r"video01\.mp4: expected a video file, found nothing"):
        Cholec80Dataset(copy, size=SIZE)


def test_error_annotation_claims_more_frames_than_the_video(written, tmp_path):
    copy = _copy(written[0], tmp_path)
    ann = copy / "tool_annotations" / "video02-tool.txt"
    ann.write_text(ann.read_text() + "75\t0\t0\t0\t0\t0\t0\t0\n")
    with pytest.raises(
        DataError, match=r"video02\.mp4: has 60 frames but .*video02-tool\.txt labels frame 75"
    ):
        Cholec80Dataset(copy, size=SIZE)
    # The same shortfall found while decoding (containers whose frame count is unknown).
    with pytest.raises(DataError, match=r"video02\.mp4: only 60 decodable frames; frame 75"):
        read_frames(copy / "videos" / "video02.mp4", [0, 75])


def test_error_malformed_tool_file(written, tmp_path):
    copy = _copy(written[0], tmp_path)
    ann = copy / "tool_annotations" / "video01-tool.txt"
    lines = ann.read_text().splitlines()
    ann.write_text("\n".join([lines[0], lines[1] + "\t1", *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"video01-tool\.txt, line 2: 9 columns, expected 8"):
        Cholec80Dataset(copy, size=SIZE)
    ann.write_text("Frame\tGrasper\tHook\n0\t1\t0\n")
    with pytest.raises(DataError, match=r"video01-tool\.txt: header .*\(3 columns\); expected the 8 columns"):
        read_tool_annotation(ann)
    # Column order is free: columns are matched by name.
    ann.write_text(
        "Frame\tSpecimenBag\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\n0\t1\t0\t0\t0\t0\t0\t1\n"
    )
    frames, labels = read_tool_annotation(ann)
    assert frames.tolist() == [0]
    assert np.flatnonzero(labels[0]).tolist() == sorted(
        SURGICAL_CLASSES.index(c) for c in ("specimen_bag", "suction", "tissue")
    )
    with pytest.raises(DataError, match="tool_annotations: expected a folder"):
        shutil.rmtree(copy / "tool_annotations")
        Cholec80Dataset(copy, size=SIZE)
