"""A fifth task, defined here and registered with ``register_task``, runs train -> tune ->
inspect (bbox) -> extract -> evaluate through the same workflows as the built-in tasks: adding
a task touches ``gcfeat.tasks`` only (a Task object), nothing in the workflows or stages.

The toy task: 16x16 grey images, 3 classes by the shape and brightness of one object (a dim
horizontal bar, a vertical bar, a bright square); the object is the ground-truth mask.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gcfeat.io import FeatureFile
from gcfeat.tasks import Task, get_task, register_task, task_names, unregister_task
from gcfeat.workflows.evaluate import evaluate
from gcfeat.workflows.extract import extract
from gcfeat.workflows.inspect import TaskBoxes, inspect
from gcfeat.workflows.train import TrainOutcome, train
from gcfeat.workflows.tune import TuningResult, tune

CLASSES = ("horizontal", "vertical", "square")
SHAPES = {
    0: (slice(7, 10), slice(3, 13)),
    1: (slice(3, 13), slice(7, 10)),
    2: (slice(5, 11), slice(5, 11)),
}  # y, x extent of each class's object


class TinyCNN(nn.Module):
    """conv -> pool -> conv (``last_conv``, the CAM target and M2/M3 map) -> GAP -> linear."""

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.last_conv = nn.Conv2d(width, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        return self.fc(torch.relu(self.last_conv(x)).mean((2, 3)))


def write_toy(out, n_train: int = 48, n_test: int = 12, seed: int = 0) -> Path:
    """``<out>/<split>.npz`` with ``images (N, 16, 16)`` float32, ``labels``, ``masks``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_test), ("test", n_test)):
        labels = np.arange(n) % 3
        images = rng.uniform(0, 0.2, (n, 16, 16)).astype(np.float32)
        masks = np.zeros((n, 16, 16), bool)
        for i, k in enumerate(labels):
            masks[i][SHAPES[int(k)]] = True
            images[i][masks[i]] += 0.4 + 0.3 * int(k)
        np.savez(out / f"{split}.npz", images=images, labels=labels, masks=masks)
    return out


class ToySquares(torch.utils.data.Dataset):
    def __init__(self, root, split, size: int = 16):
        self.root = Path(root)
        d = np.load(self.root / f"{split}.npz")
        self.images, self.labels, self.masks = d["images"], d["labels"].tolist(), d["masks"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        k = int(self.labels[i])
        return {
            "image": torch.from_numpy(self.images[i])[None],
            "label": torch.tensor(k),
            "labels": nn.functional.one_hot(torch.tensor(k), 3).float(),
            "gt_mask": torch.from_numpy(self.masks[i]),
            "video": "toy",
            "frame_index": i,
        }


TOY = Task(
    "toy",
    CLASSES,
    "multiclass",
    2,
    (16, 16),
    1,
    "tiny_cnn",
    ("tiny_cnn",),
    None,
    None,
    "float in [0, 1]",
    ("train", "val", "test"),
    lambda arch, **kw: TinyCNN(),
    ToySquares,
    lambda m: m.last_conv,
    write_toy,
    {"epochs": 10, "lr": 2e-2, "batch_size": 8, "optimizer": "adamw"},
    gt_name="object",
    min_area=2,
)


@pytest.fixture
def toy_task():
    register_task(TOY)
    yield TOY
    unregister_task("toy")


def test_a_fifth_task_runs_every_workflow(toy_task, tmp_path, one_thread):
    assert "toy" in task_names() and get_task("toy") is toy_task
    data = tmp_path / "data"
    torch.manual_seed(0)  # the model's initial weights
    trained = train("toy", data, synthetic=True, out=tmp_path, progress=False, say=lambda *_: None)
    assert isinstance(trained, TrainOutcome) and trained.wrote_synthetic
    assert trained.checkpoint == tmp_path / "toy_tiny_cnn_best.pt" and trained.checkpoint.is_file()
    assert trained.metric == "accuracy" and trained.best_score > 0.5  # chance is 1/3
    model, info = toy_task.load_checkpoint(trained.checkpoint)
    assert isinstance(model, TinyCNN) and info["task"] == "toy" and info["input_size"] == [16, 16]

    study = tune(
        "toy", data, trained.checkpoint, "0.2:0.6:0.2", out=tmp_path / "tune", min_area=toy_task.min_area
    )
    assert isinstance(study, TuningResult)
    table, rec = study
    assert set(table["class_name"]) == {*CLASSES, "all"}
    assert sorted(set(table["threshold"].round(2))) == [0.2, 0.4, 0.6]
    assert rec["settings"]["task"] == "toy" and rec["settings"]["frames"] == 12
    assert study.best_threshold in (0.2, 0.4, 0.6)
    assert json.loads((tmp_path / "tune" / "tune_recommendation.json").read_text())["metric"] == "mean_iou"

    shown = inspect("toy", data, trained.checkpoint, 1, threshold=0.4, min_area=2, out=tmp_path / "fig.png")
    assert isinstance(shown, TaskBoxes) and shown.figure.is_file() and shown.label == 1
    assert shown.gt_box.tolist() == [7.0, 3.0, 10.0, 13.0]  # x1, y1, x2, y2 of the bar
    assert shown.boxes.xyxy.shape[1] == 4 and "object mask" in shown.title

    res = extract(
        "toy",
        data,
        trained.checkpoint,
        str(tmp_path / "toy.h5"),
        split="test",
        methods=["m1", "m2", "m3"],
        layout="auto",
        batch_size=8,
        num_workers=0,
        progress=False,
    )
    assert res.stats["frames"] == 12
    with FeatureFile(tmp_path / "toy.h5") as ff:
        assert ff.methods == ["m1", "m2", "m3"] or sorted(ff.methods) == ["m1", "m2", "m3"]
        rows = ff["toy"].rows("m3")
        assert len(rows["label"]) == 12 and rows["features"].shape[1] > 0

    r = evaluate("toy", data, trained.checkpoint, tmp_path / "eval", n_steps=8, exports=1, progress=False)
    assert r["task"] == "toy" and r["samples"]["n"] == 12
    assert 0.0 <= r["classification"]["accuracy"] <= 1.0
    assert r["localisation"]["gradcam"]["pointing_game"]["n"] == 12
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_register_task_refuses_a_taken_name():
    with pytest.raises(ValueError, match="registered already"):
        register_task(get_task("organ3d"))
