"""Threshold calibration: per-class / global T chosen on one split, saved, loaded, applied."""

import json

import pytest
import torch

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.boxes.calibration import (
    ThresholdCalibration,
    ThresholdFileError,
    calibrate_thresholds,
    gt_known_probs,
)


def _split(n=6):
    """Class 0's object is the 0.5 plateau (T < 0.5 finds it), class 1's the 0.9 core (T in
    [0.5, 0.9) finds it)."""
    heat = torch.zeros(n, 2, 40, 48)
    boxes, labels = [], []
    for b in range(n):
        y, x = 4 + b, 6 + b
        for k in range(2):
            heat[b, k, y : y + 20, x : x + 24] = 0.5
            heat[b, k, y + 5 : y + 12, x + 6 : x + 16] = 0.9
        boxes.append([[x, y, x + 24, y + 20], [x + 6, y + 5, x + 16, y + 12]])
        labels.append([0, 1])
    return heat, torch.ones(n, 2), boxes, labels


def test_per_class_thresholds_transfer(tmp_path):
    heat, probs, boxes, labels = _split()
    cal = calibrate_thresholds(
        heat, probs, boxes, labels, "0.1:0.9:0.1", class_names=["a", "b"], min_gt=1, meta={"layer": "layer4"}
    )
    assert cal.per_class == pytest.approx([0.1, 0.5]) and cal.per_class_source == ["class", "class"]
    assert cal.per_class_score == pytest.approx([1.0, 1.0]) and cal.n_gt == [6, 6]
    assert cal.global_score == pytest.approx(0.5 + 0.5 * (70 / 480))  # one T cannot fit both
    path = cal.save(tmp_path / "t.json")
    back = ThresholdCalibration.load(path)
    assert back == cal and back.meta == {"layer": "layer4"}
    T = back.per_channel()
    assert T.tolist() == pytest.approx([0.1, 0.5]) and back.per_channel([1]).tolist() == pytest.approx([0.5])
    test_heat, _, test_boxes, _ = _split(3)
    got = heatmap_to_boxes(test_heat, T)
    for b in range(3):
        assert got.xyxy[got.frame == b].tolist() == [
            list(map(float, test_boxes[b][0])),
            list(map(float, test_boxes[b][1])),
        ]
    # too few GT boxes: the global T
    few = calibrate_thresholds(heat, probs, boxes, labels, "0.1:0.9:0.1", min_gt=7)
    assert few.per_class == [few.global_threshold] * 2 and few.per_class_source == ["global"] * 2


def test_gt_known_mode_ignores_the_classifier():
    heat, _, boxes, labels = _split()
    missed = torch.zeros(6, 2)  # the classifier predicts nothing
    pred = calibrate_thresholds(heat, missed, boxes, labels, "0.1:0.9:0.1", min_gt=1)
    known = calibrate_thresholds(heat, missed, boxes, labels, "0.1:0.9:0.1", mode="gt_known", min_gt=1)
    assert pred.per_class_score == [0.0, 0.0]
    assert known.per_class == pytest.approx([0.1, 0.5]) and known.mode == "gt_known"
    assert gt_known_probs([[1], [], [0, 1]], [0, 1]).tolist() == [[0, 1], [0, 0], [1, 1]]


def test_bad_files_are_refused_and_left_alone(tmp_path):
    heat, probs, boxes, labels = _split()
    cal = calibrate_thresholds(heat, probs, boxes, labels, "0.1:0.9:0.1", min_gt=1)
    with pytest.raises(ThresholdFileError, match="not found"):
        ThresholdCalibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ThresholdFileError, match="bad.json"):
        ThresholdCalibration.load(bad)
    d = cal.to_json()
    d["per_class"][0] = 1.5
    out = tmp_path / "range.json"
    text = json.dumps(d)
    out.write_text(text)
    with pytest.raises(ThresholdFileError, match="outside"):
        ThresholdCalibration.load(out)
    assert out.read_text() == text
    d["format"] = "other/1"
    out.write_text(json.dumps(d))
    with pytest.raises(ThresholdFileError, match="format"):
        ThresholdCalibration.load(out)
    with pytest.raises(ThresholdFileError, match="class ids"):
        cal.per_channel([5])
    with pytest.raises(ThresholdFileError, match="mode"):
        calibrate_thresholds(heat, probs, boxes, labels, mode="oracle")
