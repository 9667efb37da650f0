"""The feature file keeps each video's source frame size; boxes convert to source pixels."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from gcfeat.data.classes import SURGICAL_CLASSES
from gcfeat.export import main as export_main
from gcfeat.io import FeatureFile, FeatureFileError, FeatureWriter, box_to_source
from gcfeat.io.exports import ExportError, export_interaction, inclusive_boxes
from gcfeat.io.features import merge_feature_files

ATTRS = {"classes": list(SURGICAL_CLASSES), "input_size": [64, 80], "architecture": "resnet18"}


def _rows(n):
    return SimpleNamespace(
        frame=np.arange(n),
        label=np.full(n, 10),
        score=np.ones(n),
        box=np.tile([[2, 4, 18, 36]], (n, 1)),
        features=np.ones((n, 8)),
        empty=np.zeros(n, bool),
    )


def _write(path, video, sizes):
    with FeatureWriter(path, ATTRS, {"m2": 8}, 11) as w:
        w.write([video] * 2, [0, 1], np.zeros((2, 11)), {"m2": _rows(2)}, source_sizes=sizes)


def test_source_size_kept_through_merge(tmp_path):
    _write(tmp_path / "a.h5", "seq_1", [(1024, 1280)] * 2)
    _write(tmp_path / "b.h5", "seq_2", [(512, 640)] * 2)
    merge_feature_files([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], tmp_path / "m.h5")
    with FeatureFile(tmp_path / "m.h5") as ff:
        assert ff["seq_1"].source_size == (1024, 1280) and ff["seq_2"].source_size == (512, 640)
        np.testing.assert_array_equal(
            ff["seq_1"].rows("m2", source_pixels=True)["box_source"], [[32, 64, 288, 576]] * 2
        )
        np.testing.assert_array_equal(
            ff["seq_2"].rows("m2", source_pixels=True)["box_source"], [[16, 32, 144, 288]] * 2
        )


def test_old_files_say_why_no_source_boxes(tmp_path):
    _write(tmp_path / "old.h5", "seq_1", None)
    with FeatureFile(tmp_path / "old.h5") as ff:
        assert ff["seq_1"].source_size is None
        with pytest.raises(FeatureFileError, match="old.h5.*source_size"):
            ff["seq_1"].rows("m2", source_pixels=True)
    (tmp_path / "data").mkdir()
    with pytest.raises(FeatureFileError, match="source_size"):
        export_interaction(
            str(tmp_path / "old.h5"), str(tmp_path / "o"), data=tmp_path / "data", progress=False
        )


def test_exports_need_the_dataset(tmp_path, capsys):
    _write(tmp_path / "f.h5", "seq_1", [(64, 80)] * 2)
    with pytest.raises(ExportError, match="data: .*scene-graph"):
        export_interaction(str(tmp_path / "f.h5"), str(tmp_path / "o"), progress=False)
    assert (
        export_main(
            [
                "captioning",
                str(tmp_path / "f.h5"),
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert re.search("error: data: .* not a folder", capsys.readouterr().err)
    with pytest.raises(SystemExit):  # argparse: --data is required
        export_main(["interaction", str(tmp_path / "f.h5"), "--out", str(tmp_path / "c")])


def test_inclusive_boxes():
    got = inclusive_boxes([[0, 0, 1280, 1024], [10.0004, 20, 30.0002, 40], [5, 5, 5, 5]], (1024, 1280))
    assert got.tolist() == [[0, 0, 1279, 1023], [10, 20, 29, 39], [5, 5, 4, 4]]
    assert box_to_source(np.array([[1, 2, 3, 4]]), (10, 20), (100, 40)).tolist() == [[2, 20, 6, 40]]
