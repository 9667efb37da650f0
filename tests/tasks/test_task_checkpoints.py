"""One checkpoint format for every task, one loader for every form: the gcfeat checkpoint of
each task, the task checkpoints written before it (built here with ``torch.save`` of the old
dict layout), and the same checks (task, class count, finite weights, unsafe / truncated
files) for all of them."""

import os

import pytest
import torch

from gcfeat.models import CheckpointError, load_checkpoint, save_checkpoint
from gcfeat.tasks import get_task, load_task_checkpoint

#: task -> (arch, input shape of one sample)
CASES = {
    "prostate": ("resnet18_nobn_dropout", (3, 32, 32)),
    "organ3d": ("resnet3d_18_slim", (1, 28, 28, 28)),
    "alzheimer": ("baseline_cnn", (1, 128, 128)),
}


def _model(task, arch):
    torch.manual_seed(0)
    return get_task(task).build_model(arch).eval()


def _old_task_file(path, task, arch, model, **changes):
    """What ``save_task_checkpoint`` wrote before the one format (its dict layout)."""
    t = get_task(task)
    blob = {
        "format": "gcfeat-task-checkpoint",
        "task": task,
        "arch": arch,
        "classes": list(t.classes),
        "input_size": list(t.input_size),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": {"epoch": 3, "val_accuracy": 0.75, "seed": 0},
    }
    blob.update(changes)
    torch.save(blob, path)
    return path


def _logits(model, shape):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.rand(2, *shape))


@pytest.mark.parametrize("task", sorted(CASES))
def test_old_task_checkpoints_load_with_the_same_outputs(tmp_path, task):
    arch, shape = CASES[task]
    model = _model(task, arch)
    path = _old_task_file(tmp_path / "old.pt", task, arch, model)
    loaded, info = get_task(task).load_checkpoint(path)
    assert torch.equal(_logits(loaded, shape), _logits(model, shape))
    assert (info.form, info.task, info.arch, info.epoch) == ("task", task, arch, 3)
    assert info.classes == get_task(task).classes and info["meta"]["val_accuracy"] == 0.75
    again, _ = load_task_checkpoint(path)  # the file names its task
    assert torch.equal(_logits(again, shape), _logits(model, shape))


@pytest.mark.parametrize("task", sorted(CASES))
def test_every_task_writes_and_reads_the_one_format(tmp_path, task):
    arch, shape = CASES[task]
    t, model = get_task(task), _model(task, arch)
    path = save_checkpoint(
        tmp_path / "new.pt",
        model,
        classes=t.classes,
        arch=arch,
        input_size=t.input_size,
        mean=t.mean,
        std=t.std,
        task=task,
        meta={"epoch": 2},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gcfeat-checkpoint" and raw["task"] == task and raw["arch"] == arch
    assert raw["classes"] == list(t.classes) and raw["input_size"] == list(t.input_size)
    loaded, info = t.load_checkpoint(path)
    assert torch.equal(_logits(loaded, shape), _logits(model, shape))
    assert (info.form, info.task, info.epoch) == ("gcfeat", task, 2)
    with pytest.raises(
        CheckpointError,
        match=rf"holds a {arch} model of task '{task}'.*"
        rf"get_task\('{task}'\).load_checkpoint",
    ):
        load_checkpoint(path)  # no builder: the task is needed


def test_a_file_of_another_task_or_class_count_is_refused(tmp_path):
    model = _model("organ3d", "resnet3d_18_slim")
    old = _old_task_file(tmp_path / "o.pt", "organ3d", "resnet3d_18_slim", model)
    with pytest.raises(CheckpointError, match="a 'organ3d' checkpoint, expected task 'alzheimer'"):
        get_task("alzheimer").load_checkpoint(old)
    with pytest.raises(ValueError, match="expected task 'prostate'"):
        load_task_checkpoint(old, "prostate")
    three = _old_task_file(tmp_path / "k.pt", "organ3d", "resnet3d_18_slim", model, classes=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="k.pt: lists 3 classes but its head has 11 outputs"):
        get_task("organ3d").load_checkpoint(three)


@pytest.mark.parametrize("form", ["task", "gcfeat", "bare"])
def test_non_finite_weights_are_refused_in_every_form(tmp_path, form):
    if form == "task":
        model = _model("alzheimer", "baseline_cnn")
        path = _old_task_file(tmp_path / "nan.pt", "alzheimer", "baseline_cnn", model)
        blob = torch.load(path, weights_only=True)
        blob["state_dict"][
            "fc1.weight" if "fc1.weight" in blob["state_dict"] else next(iter(blob["state_dict"]))
        ][0] = float("nan")
        torch.save(blob, path)
        load = get_task("alzheimer").load_checkpoint
    else:
        model = get_task("surgical").build_model("resnet18")
        with torch.no_grad():
            model.fc.weight[0, 0] = float("inf")
        path = tmp_path / "nan.pt"
        if form == "gcfeat":
            save_checkpoint(
                path,
                model,
                classes=get_task("surgical").classes,
                arch="resnet18",
                input_size=(64, 80),
                mean=None,
                std=None,
            )
        else:
            torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
        load = get_task("surgical").load_checkpoint
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"nan.pt: non-finite weights \(NaN or inf\).*expected finite"):
        load(path)
    assert path.read_bytes() == before


def test_unsafe_and_truncated_old_task_files_are_refused(tmp_path):
    model = _model("alzheimer", "baseline_cnn")
    evil = _old_task_file(tmp_path / "evil.pt", "alzheimer", "baseline_cnn", model, meta={"hook": os.system})
    with pytest.raises(CheckpointError, match=r"evil.pt: contains non-tensor objects"):
        get_task("alzheimer").load_checkpoint(evil)
    good = _old_task_file(tmp_path / "good.pt", "alzheimer", "baseline_cnn", model)
    half = tmp_path / "half.pt"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"half.pt: truncated or not a torch checkpoint"):
        get_task("alzheimer").load_checkpoint(half)
