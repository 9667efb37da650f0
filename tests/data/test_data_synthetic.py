"""The synthetic scene generator and the per-frame ground-truth files."""

import numpy as np
import pytest

from gcfeat.data import (
    INSTRUMENTS,
    SURGICAL_CLASSES,
    TISSUE,
    DataError,
    generate_video,
    read_frame_gt,
    rle_decode,
    rle_encode,
    write_frame_gt,
)
from gcfeat.data.groundtruth import mask_box
from gcfeat.data.synthetic import CHOLEC80_CLASSES

SIZE = (64, 80)


def _naive_extent(mask):
    """Reference box: loop over every pixel."""
    x1 = y1 = 10**9
    x2 = y2 = -1
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x]:
                x1, y1, x2, y2 = min(x1, x), min(y1, y), max(x2, x + 1), max(y2, y + 1)
    return (x1, y1, x2, y2)


def _naive_rle(mask):
    flat = [bool(v) for v in mask.T.reshape(-1)]  # column-major
    counts, current, run = [], False, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


def test_same_seed_gives_identical_frames_and_other_seed_differs():
    a = list(generate_video(7, 8, SIZE))
    b = list(generate_video(7, 8, SIZE))
    c = list(generate_video(8, 8, SIZE))
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.labels, fb.labels)
        assert fa.boxes == fb.boxes
        assert fa.masks.keys() == fb.masks.keys()
        for k in fa.masks:
            np.testing.assert_array_equal(fa.masks[k], fb.masks[k])
    assert any(not np.array_equal(fa.image, fc.image) for fa, fc in zip(a, c))


def test_random_access_equals_iteration_and_global_rng_untouched():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    video = generate_video((3, 1), 10, SIZE)
    frames = list(video)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    for i in (9, 0, 4):
        np.testing.assert_array_equal(video[i].image, frames[i].image)
        assert video[i].frame_index == i
    assert video[-1].frame_index == 9
    with pytest.raises(IndexError):
        video[10]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_box_is_exactly_its_mask_extent(seed):
    video = generate_video(seed, 6, SIZE, min_visible=30)
    for frame in video:
        assert frame.image.shape == (*SIZE, 3) and frame.image.dtype == np.uint8
        assert frame.labels.shape == (len(SURGICAL_CLASSES),)
        assert frame.labels[TISSUE] == 1
        assert frame.boxes[TISSUE] == (0, 0, SIZE[1], SIZE[0])
        present = {int(c) for c in np.flatnonzero(frame.labels)}
        assert present == set(frame.boxes) == set(frame.masks)
        for c in present - {TISSUE}:
            mask = frame.masks[c]
            assert mask.dtype == bool and mask.shape == SIZE
            assert mask.sum() >= 30  # labels never claim a hidden tool
            assert frame.boxes[c] == _naive_extent(mask)
        # Visible masks do not overlap: occlusion is resolved, and tissue is what is left.
        stack = np.stack([frame.masks[c] for c in present])
        assert stack.sum(0).max() == 1


def test_scene_statistics_over_a_small_dataset():
    counts = np.zeros(len(SURGICAL_CLASSES), int)
    per_frame = []
    queue = []  # shared, as the writers do
    for v in range(6):
        for frame in generate_video((0, v), 60, SIZE, class_queue=queue):
            counts += frame.labels
            per_frame.append(int(frame.labels[list(INSTRUMENTS)].sum()))
    per_frame = np.bincount(per_frame, minlength=4)
    assert len(per_frame) == 4  # never more than 3 instruments
    assert 0 < per_frame[0] < 0.35 * per_frame.sum()  # some empty frames, not many
    assert per_frame[1:].sum() > 0.65 * per_frame.sum()
    assert (counts[list(INSTRUMENTS)] >= 10).all(), counts  # every class appears
    assert counts[TISSUE] == 360


def test_classes_restrict_what_is_drawn_and_segment_aligns_presence():
    video = generate_video(
        5, 120, SIZE, CHOLEC80_CLASSES, segment=25, motion_period=30, track_length=(50, 100)
    )
    labels = np.stack([f.labels for f in video])
    allowed = set(CHOLEC80_CLASSES) | {TISSUE}
    assert set(np.flatnonzero(labels.any(0))) <= allowed
    # Presence only changes half-way between annotated frames (frames 25k-12 .. 25k+12 agree).
    for k in range(0, 120, 25):
        window = labels[max(0, k - 12) : k + 13]
        assert (window == labels[k]).all(), k
    with pytest.raises(ValueError, match="tissue"):
        generate_video(0, 2, SIZE, classes=["tissue"])


def test_background_is_textured_not_flat():
    frame = generate_video(0, 1, SIZE, max_instruments=0)[0]
    tissue = frame.image[frame.masks[TISSUE]]
    assert frame.labels.sum() == 1
    assert tissue.std(0).min() > 5  # texture, vessels, highlights
    r, g, b = tissue.mean(0)
    assert r > g + 30 and r > b + 30  # reddish tissue


def test_rle_matches_naive_encoding_and_round_trips():
    rng = np.random.default_rng(0)
    masks = [
        rng.random((7, 5)) > 0.5,
        np.zeros((4, 6), bool),
        np.ones((3, 3), bool),
        generate_video(1, 1, SIZE)[0].masks[TISSUE],
    ]
    masks[0][0, 0] = True  # starts with a run of ones
    for m in masks:
        rle = rle_encode(m)
        assert rle["size"] == list(m.shape)
        assert rle["counts"] == _naive_rle(m)
        np.testing.assert_array_equal(rle_decode(rle), m)
    assert mask_box(np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError, match="sum"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_frame_gt_file_round_trip(tmp_path):
    frame = generate_video(4, 3, SIZE)[2]
    path = tmp_path / "g" / "frame002.json"
    write_frame_gt(
        path,
        labels=frame.labels,
        boxes=frame.boxes,
        masks=frame.masks,
        size=SIZE,
        video="seq_9",
        frame_index=2,
        image="seq_9/left_frames/frame002.png",
    )
    gt = read_frame_gt(path)
    np.testing.assert_array_equal(gt.labels, frame.labels)
    assert gt.boxes == frame.boxes and gt.size == SIZE
    assert (gt.video, gt.frame_index, gt.image) == ("seq_9", 2, "seq_9/left_frames/frame002.png")
    for c, m in frame.masks.items():
        np.testing.assert_array_equal(gt.masks[c], m)
        assert gt.areas[c] == m.sum()
    boxes, labels = gt.boxes_array()
    assert boxes.shape == (len(frame.boxes), 4) and list(labels) == sorted(frame.boxes)
    assert read_frame_gt(path, with_masks=False).masks is None


def test_frame_gt_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        read_frame_gt(bad)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.json.*empty file"):
        read_frame_gt(empty)
    with pytest.raises(DataError, match="missing.json"):
        read_frame_gt(tmp_path / "missing.json")
