"""The held-out test split of the synthetic MICCAI 2018 writer: extra sequences that leave the
train / val sequences byte-identical."""

import json

import pytest

from gcfeat.cli.synthetic import main as synthetic_main
from gcfeat.data import build_dataset
from gcfeat.data.synthetic import write_miccai18


def test_test_videos_are_a_new_split_and_leave_train_val_unchanged(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_miccai18(a, num_videos=3, num_frames=3, size=(32, 40), seed=1, progress=False)
    s = write_miccai18(b, num_videos=3, num_frames=3, size=(32, 40), seed=1, progress=False, test_videos=2)
    assert s["splits"] == {"train": ["seq_2", "seq_3"], "val": ["seq_1"], "test": ["seq_4", "seq_5"]}
    assert json.loads((b / "dataset.json").read_text())["splits"]["test"] == ["seq_4", "seq_5"]
    for seq in ("seq_1", "seq_2", "seq_3"):
        for png in sorted((a / seq / "left_frames").glob("*.png")):
            assert png.read_bytes() == (b / seq / "left_frames" / png.name).read_bytes()
        assert (a / "gt_bbox" / f"{seq}.txt").read_text() == (b / "gt_bbox" / f"{seq}.txt").read_text()
    test = build_dataset(b, layout="miccai18", split="test", size=(32, 40))
    assert test.sequences == ["seq_4", "seq_5"] and len(test) == 6
    assert "gt_boxes" in test[0]
    assert len(build_dataset(b, split="val", size=(32, 40))) == 3  # seq_1
    assert len(build_dataset(b, split="all", size=(32, 40))) == 15
    with pytest.raises(ValueError, match="split 'test'"):
        build_dataset(a, layout="miccai18", split="test", size=(32, 40))


def test_cli_test_videos(tmp_path, capsys):
    assert (
        synthetic_main(
            [
                "--layout",
                "miccai18",
                "--out",
                str(tmp_path / "d"),
                "--videos",
                "2",
                "--frames",
                "2",
                "--size",
                "32x40",
                "--test-videos",
                "1",
            ]
        )
        == 0
    )
    assert "test: seq_3" in capsys.readouterr().out
