"""MICCAI 2018 layout: writer -> files -> Miccai18Dataset round trip, the original 8-tool
files, and clear errors."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from gcfeat.cli.synthetic import main
from gcfeat.data import (
    MICCAI18_TOOLS,
    SURGICAL_CLASSES,
    TISSUE,
    DataError,
    Miccai18Dataset,
    RandomHorizontalFlip,
    build_dataset,
    collate,
    detect_layout,
    generate_video,
    make_loader,
    miccai18_splits,
    write_miccai18,
)
from gcfeat.data.miccai18 import read_gt_bbox, read_tool_annotation
from gcfeat.data.synthetic import dataset_videos
from gcfeat.data.transforms import hflip_sample

SIZE = (64, 80)
N_VIDEOS, N_FRAMES = 2, 8


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("m18")
    summary = write_miccai18(root, N_VIDEOS, N_FRAMES, SIZE, seed=3, progress=False)
    frames = {
        name: list(video) for name, video in dataset_videos("miccai18", N_VIDEOS, N_FRAMES, SIZE, seed=3)
    }
    return root, summary, frames


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_files_in_the_real_layout(written):
    root, summary, _ = written
    for n in (1, 2):
        assert sorted(p.name for p in (root / f"seq_{n}" / "left_frames").iterdir()) == [
            f"frame{f:03d}.png" for f in range(N_FRAMES)
        ]
        assert len(list((root / "groundtruth" / f"seq_{n}").glob("frame*.json"))) == N_FRAMES
        assert (root / "gt_bbox" / f"seq_{n}.txt").is_file()
    # Sequence 1 is a validation sequence of EndoVis18; 2 is training.
    assert (root / "annotation_tool" / "val" / "seq_1.txt").is_file()
    assert (root / "annotation_tool" / "train" / "seq_2.txt").is_file()
    header = (root / "annotation_tool" / "val" / "seq_1.txt").read_text().splitlines()[0].split()
    assert header == ["frame", *SURGICAL_CLASSES[:TISSUE]]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["layout"] == "miccai18" and meta["size"] == list(SIZE) and meta["seed"] == 3
    assert meta["splits"] == {"train": ["seq_2"], "val": ["seq_1"]} == summary["splits"]
    assert summary["frames"] == N_VIDEOS * N_FRAMES
    assert detect_layout(root) == "miccai18"


def test_split_rule():
    assert miccai18_splits(range(1, 17)) == {n: "val" if n in (1, 5, 16) else "train" for n in range(1, 17)}
    assert miccai18_splits([2, 3, 4]) == {2: "train", 3: "train", 4: "val"}  # none of 1/5/16
    assert miccai18_splits([2]) == {2: "train"}


@pytest.mark.parametrize("size", [(32, 40), (48, 100)])
def test_round_trip_labels_and_scaled_boxes(written, size):
    root, _, frames = written
    ds = Miccai18Dataset(root, split="all", size=size)
    assert len(ds) == N_VIDEOS * N_FRAMES
    sy, sx = size[0] / SIZE[0], size[1] / SIZE[1]
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        ref = frames[s["video"]][s["frame_index"]]
        seen.add((s["video"], s["frame_index"]))
        assert s["image"].shape == (3, *size) and s["image"].dtype == torch.float32
        assert s["labels"].dtype == torch.float32
        np.testing.assert_array_equal(s["labels"].numpy(), ref.labels)
        keys = sorted(ref.boxes)
        assert s["gt_labels"].tolist() == keys
        expect = np.array([ref.boxes[k] for k in keys], np.float32) * [sx, sy, sx, sy]
        np.testing.assert_allclose(s["gt_boxes"].numpy(), expect, rtol=1e-6)
        np.testing.assert_allclose(s["gt_boxes"][-1].numpy(), [0, 0, size[1], size[0]])
    assert len(seen) == len(ds)
    np.testing.assert_array_equal(ds.labels, np.stack([ds[i]["labels"].numpy() for i in range(len(ds))]))


def test_image_is_the_normalised_png(written):
    root, _, frames = written
    ds = Miccai18Dataset(root, split="val", size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    s = ds[5]
    ref = frames["seq_1"][5].image.astype(np.float32) / 255  # PNG is lossless
    expect = (ref - 0.5) / np.array([0.25, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(s["image"].numpy().transpose(1, 2, 0), expect, atol=1e-5)


def test_splits_and_sequence_filter(written):
    root, _, _ = written
    assert {v for v, _, _ in Miccai18Dataset(root, "train", SIZE).items} == {"seq_2"}
    assert {v for v, _, _ in Miccai18Dataset(root, "val", SIZE).items} == {"seq_1"}
    ds = Miccai18Dataset(root, "all", SIZE, sequences=[2])
    assert ds.sequences == ["seq_2"] and len(ds) == N_FRAMES
    with pytest.raises(DataError, match="seq_7"):
        Miccai18Dataset(root, "all", SIZE, sequences=["seq_7"])
    with pytest.raises(ValueError, match="split"):
        Miccai18Dataset(root, "test", SIZE)


def test_gt_from_gt_bbox_file_when_no_json(written, tmp_path):
    root, _, frames = written
    copy = _copy(root, tmp_path)
    shutil.rmtree(copy / "groundtruth")
    ds = Miccai18Dataset(copy, "all", (32, 40))
    ref_ds = Miccai18Dataset(root, "all", (32, 40))
    for i in (0, 3, 11):
        a, b = ds[i], ref_ds[i]
        assert a["gt_labels"].tolist() == b["gt_labels"].tolist()
        torch.testing.assert_close(a["gt_boxes"], b["gt_boxes"])
    shutil.rmtree(copy / "gt_bbox")
    s = Miccai18Dataset(copy, "all", (32, 40))[0]  # now from the scene graphs
    assert s["gt_labels"].tolist()[-1] == SURGICAL_CLASSES.index("tissue")
    for seq in ("seq_1", "seq_2"):
        shutil.rmtree(copy / seq / "xml")
    s = Miccai18Dataset(copy, "all", (32, 40))[0]
    assert "gt_boxes" not in s and "gt_labels" not in s
    assert "gt_boxes" not in Miccai18Dataset(root, "all", SIZE, with_gt=False)[0]


def test_original_8_tool_files_parse(tmp_path):
    seq = tmp_path / "seq_3" / "left_frames"
    seq.mkdir(parents=True)
    frames = list(generate_video(0, 2, SIZE))
    for f, fr in enumerate(frames):
        cv2.imwrite(str(seq / f"frame{f:03d}.png"), fr.image[..., ::-1])
    ann = tmp_path / "annotation_tool" / "train"
    ann.mkdir(parents=True)
    (ann / "seq_3.txt").write_text("frame t1 t2 t3 t4 t5 t6 t7 t8\n0 1 0 0 1 0 0 0 1\n1 0 1 0 0 0 0 1 0\n")
    (tmp_path / "gt_bbox").mkdir()
    b1 = ["0,0,0,0"] * 8
    b1[0], b1[3] = "10,20,30,40", "5,6,70,60"
    (tmp_path / "gt_bbox" / "seq_3.txt").write_text(
        "frame000.png " + " ".join(b1) + "\nframe001.png " + " ".join(["0,0,0,0"] * 7 + ["8,8,16,16"]) + "\n"
    )
    frames_, labels = read_tool_annotation(ann / "seq_3.txt")
    assert frames_.tolist() == [0, 1]
    assert labels[0].tolist() == [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1]  # t_k -> MICCAI18_TOOLS[k]
    assert labels[1].tolist() == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert len(MICCAI18_TOOLS) == 8
    assert read_gt_bbox(tmp_path / "gt_bbox" / "seq_3.txt") == {
        0: {0: (10, 20, 30, 40), 3: (5, 6, 70, 60)},
        1: {7: (8, 8, 16, 16)},
    }
    ds = Miccai18Dataset(tmp_path, "train", (32, 40))
    s = ds[0]
    assert s["video"] == "seq_3" and s["frame_index"] == 0
    assert s["labels"].tolist() == [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    assert s["gt_labels"].tolist() == [0, 3]
    np.testing.assert_allclose(s["gt_boxes"].numpy(), [[5, 10, 15, 20], [2.5, 3, 35, 30]])
    assert detect_layout(tmp_path) == "miccai18"


def test_collate_loader_and_flip(written):
    root, _, _ = written
    ds = build_dataset(root, "auto", "all", (32, 40), transform=RandomHorizontalFlip(p=0.0))
    assert isinstance(ds, Miccai18Dataset)
    batch = next(iter(make_loader(ds, batch_size=5, shuffle=True, num_workers=0)))
    assert batch["image"].shape == (5, 3, 32, 40) and batch["labels"].shape == (5, 11)
    assert len(batch["gt_boxes"]) == 5 and isinstance(batch["video"], list)
    one = collate([ds[0]])
    assert one["frame_index"] == [0]
    s = ds[2]
    f = hflip_sample(s)
    torch.testing.assert_close(f["image"], s["image"].flip(-1))
    b, fb = s["gt_boxes"], f["gt_boxes"]
    for k in range(len(b)):  # naive: mirror each box by hand
        assert fb[k].tolist() == [40 - b[k, 2].item(), b[k, 1].item(), 40 - b[k, 0].item(), b[k, 3].item()]
    assert RandomHorizontalFlip(p=1.0)(s)["image"].equal(f["image"])


def test_cli_writes_and_prints(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "--layout",
                "miccai18",
                "--out",
                str(out),
                "--videos",
                "1",
                "--frames",
                "3",
                "--size",
                "32x40",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "wrote miccai18" in text and "3 frames" in text and "tissue" in text
    assert len(list((out / "seq_1" / "left_frames").glob("*.png"))) == 3
    assert len(Miccai18Dataset(out, "val", (32, 40))) == 3  # seq_1 is a validation sequence
    with pytest.raises(DataError, match="no seq_N.txt files for split 'train'"):
        Miccai18Dataset(out, "train", (32, 40))


# -- errors ------------------------------------------------------------------------------------


def test_error_empty_and_corrupt_png(written, tmp_path):
    copy = _copy(tmp_path=tmp_path, root=written[0])
    png = copy / "seq_1" / "left_frames" / "frame002.png"
    png.write_bytes(b"")
    ds = Miccai18Dataset(copy, "val", SIZE)
    with pytest.raises(DataError, match=r"frame002\.png: empty file"):
        ds[2]
    data = (copy / "seq_1" / "left_frames" / "frame003.png").read_bytes()
    (copy / "seq_1" / "left_frames" / "frame003.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"frame003\.png: truncated PNG"):
        ds[3]
    (copy / "seq_1" / "left_frames" / "frame004.png").write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(DataError, match=r"frame004\.png: not a PNG"):
        ds[4]
    corrupt = bytearray(data)
    corrupt[40:400] = bytes(360)  # damage the image data
    (copy / "seq_1" / "left_frames" / "frame005.png").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"frame005\.png: corrupt PNG"):
        ds[5]


def test_error_missing_png_and_folders(written, tmp_path):
    copy = _copy(written[0], tmp_path)
    (copy / "seq_2" / "left_frames" / "frame006.png").unlink()
    with pytest.raises(DataError, match=r"left_frames: no PNG for frame 6 .*seq_2\.txt"):
        Miccai18Dataset(copy, "train", SIZE)
    with pytest.raises(DataError, match="nowhere.*found nothing"):
        Miccai18Dataset(tmp_path / "nowhere", "train", SIZE)
    shutil.rmtree(copy / "annotation_tool" / "val")
    with pytest.raises(DataError, match=r"val: missing folder for split 'val'"):
        Miccai18Dataset(copy, "val", SIZE)
    (copy / "seq_2" / "left_frames" / "frame006.png").write_bytes(b"x")
    assert {v for v, _, _ in Miccai18Dataset(copy, "all", SIZE).items} == {"seq_2"}
    shutil.rmtree(copy / "annotation_tool" / "train")
    with pytest.raises(DataError, match=r"annotation_tool: no train/ or val/ folder"):
        Miccai18Dataset(copy, "all", SIZE)
    with pytest.raises(DataError, match="neither layout"):
        detect_layout(tmp_path)


def test_error_malformed_annotation(written, tmp_path):
    copy = _copy(written[0], tmp_path)
    ann = copy / "annotation_tool" / "train" / "seq_2.txt"
    lines = ann.read_text().splitlines()
    lines[3] += " 1"
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"seq_2\.txt, line 4: 12 columns, expected 11"):
        Miccai18Dataset(copy, "train", SIZE)
    ann.write_text("frame a b c\n0 1 0 1\n")
    with pytest.raises(DataError, match=r"seq_2\.txt: header .* 4 columns"):
        read_tool_annotation(ann)
    ann.write_text("frame t1 t2 t3 t4 t5 t6 t7 t8\n0 1 0 x 0 0 0 0 0\n")
    with pytest.raises(DataError, match=r"line 2: non-numeric"):
        read_tool_annotation(ann)
    ann.write_text("")
    with pytest.raises(DataError, match=r"seq_2\.txt: empty file"):
        read_tool_annotation(ann)
    box = copy / "gt_bbox" / "seq_2.txt"
    box.write_text("frame000.png 1,2,3,4 5,6,7\n")
    with pytest.raises(DataError, match=r"seq_2\.txt, line 1: 7 numbers"):
        read_gt_bbox(box)
