"""Reports over a Cholec80 dataset (videos decoded from mp4, an IterableDataset): the gallery
decodes only the sampled frames (``Cholec80Dataset.keys`` / ``decode``), for a feature file and
for a run directory."""

import json
import re

import pytest
import torch

from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, build_dataset, write_cholec80
from gcfeat.data.errors import DataError
from gcfeat.data.transforms import to_input
from gcfeat.data.video import read_frames
from gcfeat.extract import extract_dataset
from gcfeat.models import build_classifier, load_checkpoint, save_checkpoint
from gcfeat.report import build_feature_report, build_run_report

SIZE = (64, 80)


@pytest.fixture(scope="module")
def cholec(tmp_path_factory):
    root = tmp_path_factory.mktemp("c80")
    # 2 videos x 100 frames at 25 fps: tool rows at frames 0, 25, 50, 75 of each
    write_cholec80(root / "data", num_videos=2, num_frames=100, size=SIZE, seed=4, progress=False)
    torch.manual_seed(0)
    save_checkpoint(
        root / "ck.pt",
        build_classifier("resnet18", num_classes=len(SURGICAL_CLASSES)),
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=SIZE,
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    model, info = load_checkpoint(root / "ck.pt")
    norm = dict(size=SIZE, mean=SURGICAL_MEAN, std=SURGICAL_STD)
    val = build_dataset(root / "data", layout="cholec80", split="val", **norm)
    extract_dataset(
        val,
        model.eval(),
        info,
        methods=["m2"],
        threshold=0.3,
        layout=(32, 4, 4),
        out=str(root / "features.h5"),
        batch_size=4,
        num_workers=0,
        progress=False,
    )
    return root, val


def test_decode_matches_the_stream(cholec):
    root, val = cholec
    keys = val.keys()
    assert len(keys) == len(val) == 4 and keys[0][1] == 0
    pick = [keys[3], keys[1]]  # any order, given order kept
    frames = val.decode(pick)
    assert frames.items == pick and len(frames) == 2
    stream = {(s["video"], s["frame_index"]): s for s in val}
    for i, k in enumerate(pick):
        torch.testing.assert_close(frames[i]["image"], stream[k]["image"])
        torch.testing.assert_close(frames[i]["gt_boxes"], stream[k]["gt_boxes"])
    # the same pixels as a direct decode of that frame
    video, f = pick[0]
    rgb = read_frames(root / "data" / "videos" / f"{video}.mp4", [f])[0]
    torch.testing.assert_close(frames[0]["image"], to_input(rgb, SIZE, SURGICAL_MEAN, SURGICAL_STD, "area"))
    with pytest.raises(DataError, match="no annotated frame"):
        val.decode([(video, 13)])


def _items(html: str) -> list[str]:
    return re.findall(r'<figure class="item[^"]*"[^>]*>', html)


def test_feature_report_of_cholec80(cholec, tmp_path):
    root, _ = cholec
    r = build_feature_report(
        root / "features.h5",
        root / "data",
        n=3,
        checkpoint=root / "ck.pt",
        out=tmp_path / "f.html",
        progress=False,
    )
    html = r.html.read_text()
    assert r.frames == 3 and len(_items(html)) == 3 and "gallery" not in r.skipped
    assert "not found" not in html
    for ref in re.findall(r'(?:src|href)="([^"#][^"]*)"', html):
        assert (tmp_path / ref).is_file(), ref


def test_run_report_of_cholec80(cholec, tmp_path):
    root, _ = cholec
    (tmp_path / "summary.json").write_text(
        json.dumps({"data": str(root / "data"), "checkpoint": str(root / "ck.pt"), "arch": "resnet18"})
    )
    r = build_run_report(tmp_path, max_frames=2, progress=False)
    html = r.html.read_text()
    assert r.frames == 2 and len(_items(html)) == 2, r.skipped
    assert "Split val: 2 of 4 frames" in html
