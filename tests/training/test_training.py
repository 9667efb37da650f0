"""gcfeat.training.fit and the `python -m gcfeat.train` CLI on a tiny in-test dataset.

The dataset follows the sample dict of docs/DESIGN.md: each 32x40 image holds 0-3 coloured
squares (red, green, blue) on noise; ``labels`` is the multi-hot of the colours present.
"""

import csv
import math

import pytest
import torch
from torch.utils.data import Dataset

from gcfeat.models import build_classifier, load_checkpoint
from gcfeat.training import fit, seed_everything

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
CLASSES = ("red", "green", "blue")
RUN = dict(
    epochs=2,
    batch_size=8,
    lr=0.05,
    optimizer="sgd",
    schedule="cosine",
    seed=0,
    classes=CLASSES,
    progress=False,
    verbose=False,
)


class Squares(Dataset):
    def __init__(self, n, seed, num_classes=3, as_tuple=False):
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, num_classes, generator=g) < 0.5).float()
        self.pos = torch.randint(0, 20, (n, 3, 2), generator=g)
        self.noise = torch.randn(n, 3, 32, 40, generator=g) * 0.1
        self.as_tuple = as_tuple

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.noise[i].clone()
        for k in range(3):
            if self.labels[i, k]:
                y, x = self.pos[i, k].tolist()
                image[:, y : y + 12, x : x + 12] = COLOURS[k][:, None, None]
        if self.as_tuple:
            return image, int(self.labels[i, :3].argmax())
        return {"image": image, "labels": self.labels[i], "video": "seq_1", "frame_index": i}


def _model(seed=0, num_classes=3):
    seed_everything(seed)
    return build_classifier("resnet18", num_classes=num_classes)


@pytest.fixture(scope="module")
def data():
    return Squares(64, 1), Squares(32, 2)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return fit(_model(), *data, out_dir=out, name="sq", **RUN), out


def test_training_learns(full_run, data):
    result, out = full_run
    val = data[1]
    chance = float(val.labels.mean())  # mAP of random scores is about the prevalence
    assert result.best_map > chance + 0.25, (result.best_map, chance, result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[1]["lr"] == pytest.approx(0.05 * 0.5)  # cosine at epoch 2 of 2
    assert result.best_map == pytest.approx(max(h["val_mAP"] for h in result.history))
    assert result.per_class_ap.shape == (3,)
    assert result.best_map == pytest.approx(float(result.per_class_ap.mean()))


def test_outputs_checkpoints_and_log(full_run):
    result, out = full_run
    assert result.checkpoint == out / "sq_best.pt" and result.last_checkpoint == out / "sq_last.pt"
    model, info = load_checkpoint(result.checkpoint, classes=CLASSES, arch="resnet18")
    assert info.input_size == (32, 40) and info.classes == CLASSES
    assert info.meta["epochs"] == 2 and info.meta["seed"] == 0
    assert info.meta["best_mAP"] == pytest.approx(result.best_map)
    assert info.meta["epoch"] == result.best_epoch
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2 and "optimizer_state_dict" in last and "scheduler_state_dict" in last
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    with open(result.log_csv) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_mAP", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_mAP"]) == pytest.approx(result.history[1]["val_mAP"], rel=1e-5)


class Crash(RuntimeError):
    pass


def test_resume_continues_and_matches_uninterrupted_run(full_run, data, tmp_path):
    result, _ = full_run

    def crash_after_first(row):
        if row["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(_model(), *data, out_dir=tmp_path, name="sq", on_epoch_end=crash_after_first, **RUN)
    assert torch.load(tmp_path / "sq_last.pt", weights_only=True)["epoch"] == 1

    # A fresh process would build a fresh (differently initialised) model, then resume.
    resumed = fit(_model(seed=123), *data, out_dir=tmp_path, name="sq", resume=True, **RUN)
    assert resumed.start_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(resumed.history, result.history):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
        assert a["val_mAP"] == b["val_mAP"] or (math.isnan(a["val_mAP"]) and math.isnan(b["val_mAP"]))
    final = resumed.model.state_dict()
    for k, v in result.model.state_dict().items():
        assert torch.equal(final[k], v), k
    assert resumed.best_epoch == result.best_epoch and resumed.best_map == result.best_map

    # Resuming a finished run trains nothing and reports the same result.
    again = fit(_model(seed=5), *data, out_dir=tmp_path, name="sq", resume=True, **RUN)
    assert again.start_epoch == 3 and len(again.history) == 2 and again.best_map == result.best_map


def test_single_label_tuples_and_plateau(tmp_path):
    train, val = Squares(24, 3, as_tuple=True), Squares(12, 4, as_tuple=True)
    r = fit(
        _model(),
        train,
        val,
        epochs=1,
        batch_size=8,
        lr=1e-3,
        optimizer="adamw",
        schedule="plateau",
        loss="ce",
        out_dir=tmp_path,
        name="ce",
        classes=CLASSES,
        progress=False,
        verbose=False,
    )
    assert 0.0 <= r.history[0]["val_accuracy"] <= 1.0
    assert not math.isnan(r.best_map)
    with open(r.log_csv) as f:
        assert next(csv.reader(f))[-1] == "val_accuracy"


def test_bad_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="optimizer='adam'"):
        fit(_model(), *data, optimizer="adam", out_dir=tmp_path)
    with pytest.raises(ValueError, match="schedule='step'"):
        fit(_model(), *data, schedule="step", out_dir=tmp_path)
    with pytest.raises(ValueError, match="2 names given, the model has 3 outputs"):
        fit(_model(), *data, classes=["a", "b"], out_dir=tmp_path)


def test_cli_help(capsys):
    from gcfeat.cli.train import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--layout", "--arch", "--size", "--resume", "--seed", "--schedule", "--weights"):
        assert flag in text


def test_cli_trains_and_resumes(tmp_path, monkeypatch, capsys):
    import gcfeat.data
    from gcfeat.cli.train import main
    from gcfeat.data.classes import SURGICAL_CLASSES

    calls = []

    def fake_build_dataset(root, layout="auto", split="train", size=(256, 320), **kw):
        calls.append((str(root), layout, split, tuple(size), kw))
        return Squares(
            32 if split == "train" else 16, 1 if split == "train" else 2, num_classes=len(SURGICAL_CLASSES)
        )

    monkeypatch.setattr(gcfeat.data, "build_dataset", fake_build_dataset)
    monkeypatch.setattr(gcfeat.data, "detect_layout", lambda root: "miccai18")
    args = [
        "--data",
        str(tmp_path / "data"),
        "--arch",
        "resnet18",
        "--size",
        "32x40",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--workers",
        "0",
        "--out",
        str(tmp_path / "ck"),
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert calls[0][1:4] == ("miccai18", "train", (32, 40)) and calls[1][2] == "val"
    assert "mean" in calls[0][4] and "std" in calls[0][4]
    best = tmp_path / "ck" / "miccai18_resnet18_best.pt"
    assert f"best checkpoint: {best}" in out and "training log:" in out
    _, info = load_checkpoint(best, classes=SURGICAL_CLASSES)
    assert info.meta["layout"] == "miccai18" and info.input_size == (32, 40)

    assert main(args[:7] + ["2"] + args[8:] + ["--resume"]) == 0
    with open(tmp_path / "ck" / "miccai18_resnet18_log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_cli_reports_data_errors(tmp_path, capsys):
    from gcfeat.cli.train import main

    assert main(["--data", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "missing" in capsys.readouterr().err
