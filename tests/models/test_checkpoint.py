"""gcfeat.models.checkpoint: round trips, the original checkpoint forms, refused and broken files."""

import pathlib

import pytest
import torch

from gcfeat.data.classes import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.models import CheckpointError, build_classifier, load_checkpoint, save_checkpoint

X = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))


def _trained_like(arch="resnet18", num_classes=11, dropout=0.0, seed=0):
    """A model whose weights and BatchNorm statistics differ from a fresh build."""
    torch.manual_seed(seed)
    model = build_classifier(arch, num_classes=num_classes, dropout=dropout)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 40) * 2 + 0.5)  # moves the running stats
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def _logits(model):
    with torch.no_grad():
        return model.eval()(X)


@pytest.fixture(scope="module")
def model11():
    return _trained_like()


@pytest.fixture(scope="module")
def model11_dropout():
    return _trained_like(dropout=0.2, seed=1)


def test_round_trip(tmp_path, model11):
    path = save_checkpoint(
        tmp_path / "sub" / "m_best.pt",
        model11,
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=(256, 320),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
        dropout=0.0,
        meta={"epochs": 3, "best_mAP": 0.9, "seed": 7, "data": tmp_path / "data"},
    )
    assert [p.name for p in path.parent.iterdir()] == ["m_best.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gcfeat-checkpoint" and raw["version"] == 1
    assert raw["classes"] == list(SURGICAL_CLASSES) and raw["num_classes"] == 11
    assert raw["input_size"] == [256, 320] and raw["arch"] == "resnet18"
    assert raw["meta"]["data"] == str(tmp_path / "data") and raw["meta"]["seed"] == 7
    assert "gcfeat_version" in raw["meta"] and "time" in raw["meta"]

    loaded, info = load_checkpoint(path, classes=SURGICAL_CLASSES, arch="resnet18")
    assert torch.equal(_logits(loaded), _logits(model11))
    assert not loaded.training
    assert info.form == "gcfeat" and info.arch == "resnet18" and info.num_classes == 11
    assert info.classes == SURGICAL_CLASSES and info.input_size == (256, 320)
    assert info.mean == pytest.approx(SURGICAL_MEAN) and info.std == pytest.approx(SURGICAL_STD)
    assert info.meta["epochs"] == 3 and info.meta["best_mAP"] == 0.9


def test_round_trip_dropout_head_and_custom_classes(tmp_path):
    model = _trained_like(num_classes=3, dropout=0.3, seed=2)
    path = save_checkpoint(
        tmp_path / "c.pt",
        model,
        classes=["a", "b", "c"],
        arch="resnet18",
        input_size=(32, 40),
        mean=None,
        std=None,
        dropout=0.3,
    )
    loaded, info = load_checkpoint(path)
    assert isinstance(loaded.fc, torch.nn.Sequential) and loaded.fc[0].p == 0.3
    assert info.classes == ("a", "b", "c") and info.dropout == 0.3 and info.mean is None
    assert torch.equal(_logits(loaded), _logits(model))


def test_save_refuses_objects_and_inconsistent_metadata(tmp_path, model11):
    kw = dict(arch="resnet18", input_size=(32, 40), mean=None, std=None)
    with pytest.raises(CheckpointError, match=r"meta.fn is a builtin_function_or_method; only tensors"):
        save_checkpoint(tmp_path / "a.pt", model11, classes=SURGICAL_CLASSES, meta={"fn": print}, **kw)
    with pytest.raises(CheckpointError, match="3 class names given, the model has 11 outputs"):
        save_checkpoint(tmp_path / "a.pt", model11, classes=["a", "b", "c"], **kw)
    with pytest.raises(CheckpointError, match="arch='resnet50' but the model is a resnet18"):
        save_checkpoint(tmp_path / "a.pt", model11, classes=SURGICAL_CLASSES, **{**kw, "arch": "resnet50"})
    assert not list(tmp_path.iterdir())


def _original_form(form, model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if form == "bare":
        return state
    if form == "module":
        return {f"module.{k}": v for k, v in state.items()}
    if form == "resume":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        return {
            "epoch": 12,
            "model_state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer_state_dict": opt.state_dict(),
            "best_epoch": 9,
            "best_mAP": 0.87,
        }
    raise AssertionError(form)


@pytest.mark.parametrize("form", ["bare", "module", "resume"])
@pytest.mark.parametrize("head", ["linear", "dropout"])
def test_original_forms_load_with_same_logits(tmp_path, form, head, model11, model11_dropout):
    model = model11 if head == "linear" else model11_dropout
    path = tmp_path / "orig_best_checkpoint.pth.tar"
    torch.save(_original_form(form, model), path)
    raw = torch.load(path, weights_only=True)
    keys = raw.get("model_state_dict", raw)
    assert any(k.endswith("fc.1.weight") for k in keys) == (head == "dropout")
    loaded, info = load_checkpoint(path)
    assert torch.equal(_logits(loaded), _logits(model))
    assert info.arch == "resnet18" and info.num_classes == 11
    assert info.classes == SURGICAL_CLASSES  # K == 11: the surgical list
    assert info.input_size == (256, 320) and info.mean == pytest.approx(SURGICAL_MEAN)
    assert info.form == ("resume" if form == "resume" else "state_dict")
    assert isinstance(loaded.fc, torch.nn.Sequential) == (head == "dropout")
    if form == "resume":
        assert info.epoch == 12 and info.meta == {"epoch": 12, "best_epoch": 9, "best_mAP": 0.87}


def test_head_form_can_be_changed_on_load(tmp_path, model11, model11_dropout):
    path = tmp_path / "d.pth"
    torch.save({f"module.{k}": v for k, v in model11_dropout.state_dict().items()}, path)
    plain, info = load_checkpoint(path, dropout=0.0)
    assert isinstance(plain.fc, torch.nn.Linear) and info.dropout == 0.0
    assert torch.equal(_logits(plain), _logits(model11_dropout))
    torch.save(model11.state_dict(), path)
    wrapped, info = load_checkpoint(path, dropout=0.5)
    assert isinstance(wrapped.fc, torch.nn.Sequential) and info.dropout == 0.5
    assert torch.equal(_logits(wrapped), _logits(model11))


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_arch_is_inferred_from_bare_weights(tmp_path, arch):
    torch.manual_seed(0)
    # 7 outputs: no original class list (11 and 9 have one, see tests/models/)
    model = build_classifier(arch, num_classes=7).eval()
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    loaded, info = load_checkpoint(path)
    assert info.arch == arch and info.num_classes == 7
    assert info.classes == tuple(f"class_{i}" for i in range(7)) and info.input_size is None
    assert torch.equal(_logits(loaded), _logits(model))


class _Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_callable_is_refused(tmp_path, model11):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({**model11.state_dict(), "hook": _Boom(marker)}, evil)
    with pytest.raises(
        CheckpointError, match=r"evil.pt: contains non-tensor objects .*will not be unpickled"
    ):
        load_checkpoint(evil)
    assert not marker.exists()
    import os

    torch.save({"f": os.system}, tmp_path / "system.pt")
    with pytest.raises(CheckpointError, match=r"non-tensor objects \(\w+\.system\)"):
        load_checkpoint(tmp_path / "system.pt")


@pytest.mark.parametrize("new_zip", [True, False])
def test_truncated_checkpoint(tmp_path, model11, new_zip):
    good = tmp_path / "good.pt"
    torch.save(model11.state_dict(), good, _use_new_zipfile_serialization=new_zip)
    data = good.read_bytes()
    bad = tmp_path / "half.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half.pt: truncated or not a torch checkpoint"):
        load_checkpoint(bad)


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt: the file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.pt: truncated or not a torch checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: does not hold ResNet weights"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list.pt: holds a list, expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_wrong_class_count_names_both_sides(tmp_path):
    model = _trained_like(num_classes=9, seed=3)
    nine = [f"tool_{i}" for i in range(9)]
    path = save_checkpoint(
        tmp_path / "nine.pt", model, classes=nine, arch="resnet18", input_size=(32, 40), mean=None, std=None
    )
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, classes=SURGICAL_CLASSES)
    msg = str(e.value)
    assert "nine.pt: has 9 classes [tool_0, tool_1" in msg
    assert "asked for 11 [bipolar_forceps, prograsp_forceps" in msg
    with pytest.raises(CheckpointError, match=r"has 9 classes .*asked for 11"):
        load_checkpoint(path, num_classes=11)
    with pytest.raises(CheckpointError, match=r"has classes \['tool_0'.*asked for \['x0'"):
        load_checkpoint(path, classes=[f"x{i}" for i in range(9)])
    bare = tmp_path / "bare9.pt"
    torch.save(model.state_dict(), bare)
    # a bare 9-output file is the original's 9-class list (8 tools + tissue)
    with pytest.raises(
        CheckpointError,
        match=r"bare9.pt: has 9 classes \[bipolar_forceps.*, tissue\], asked for 11 \[bipolar_forceps",
    ):
        load_checkpoint(bare, classes=SURGICAL_CLASSES)
    _, info = load_checkpoint(bare, classes=nine)
    assert info.classes == tuple(nine)


def test_wrong_arch_names_both_sides(tmp_path, model11):
    path = tmp_path / "r18.pt"
    torch.save(model11.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"r18.pt: holds resnet18 weights, asked for resnet50"):
        load_checkpoint(path, arch="resnet50")


def test_missing_and_unexpected_keys_are_summarised(tmp_path, model11):
    state = dict(model11.state_dict())
    for k in [k for k in state if k.startswith("layer4.1.")]:
        del state[k]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "partial.pt: weights do not fit a resnet18 with 11 classes" in msg
    assert "missing key(s) (layer4.1.conv1.weight" in msg and "1 unexpected key(s) (extra.weight)" in msg
    state = dict(model11.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 wrong shape key\(s\) \(layer1.0.conv1.weight\)"):
        load_checkpoint(path)


def test_old_state_dict_without_batch_counters(tmp_path, model11):
    state = {k: v for k, v in model11.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    loaded, _ = load_checkpoint(tmp_path / "old.pth")
    assert torch.equal(_logits(loaded), _logits(model11))
    assert all(int(b) == 0 for n, b in loaded.named_buffers() if n.endswith("num_batches_tracked"))
