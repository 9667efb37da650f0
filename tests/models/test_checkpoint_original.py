"""The original system's checkpoint and box files load (issue 12).

- ``baseline.py`` saves ``{epoch, model_state_dict, optimizer_state_dict, best_epoch, best_mAP,
  info_list}`` where ``best_mAP`` and the ``info_list`` numbers are ``np.float64`` (from
  ``np.nanmean`` / ``np.mean``): it loads with ``weights_only=True`` and nothing but float64
  numpy scalars is let through.
- GC-A / GC-B heads have 9 outputs (8 MICCAI tools, tissue at index 8).
- ``gt_bbox/seq_N.txt`` of the original holds 9 ``x1,y1,x2,y2`` groups separated by ``", "``.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from gcfeat.data.classes import MICCAI18_TOOLS, SURGICAL_CLASSES, TISSUE
from gcfeat.data.miccai18 import read_gt_bbox
from gcfeat.models import load_checkpoint
from gcfeat.models.checkpoint import CheckpointError, read_torch_file


def _original_resnet(k, dropout=False, seed=0):
    torch.manual_seed(seed)
    m = resnet18(num_classes=1000)
    m.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, k)) if dropout else nn.Linear(512, k)
    return m.eval()


def _resume_dict(model):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    val_ap = np.array([0.5, np.nan, 0.75])
    best_map = np.nanmean(val_ap)  # np.float64, as baseline.py
    info_list = [
        ["epoch", "lr", "train_mean_loss", "train_mAP", "val_mAP"],
        [0, 1e-3, np.mean(np.array([0.3, 0.2])), np.nanmean(val_ap), best_map],
    ]
    return {
        "epoch": 3,
        "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer_state_dict": opt.state_dict(),
        "best_epoch": 2,
        "best_mAP": best_map,
        "info_list": info_list,
    }


def test_resume_dict_with_numpy_float64_loads_weights_only(tmp_path):
    model = _original_resnet(11)
    ck = _resume_dict(model)
    assert type(ck["best_mAP"]) is np.float64
    path = tmp_path / "orig_checkpoint.pt"
    torch.save(ck, path)
    # plain weights_only refuses it: the fix is not a no-op
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, weights_only=True)
    loaded, info = load_checkpoint(path)
    assert info.form == "resume" and info.epoch == 3
    assert info.meta["best_mAP"] == pytest.approx(0.625) and type(info.meta["best_mAP"]) is float
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    raw = read_torch_file(path)
    assert raw["info_list"][1][2] == pytest.approx(0.25)
    # the allowance is scoped to the load: nothing is left registered process-wide
    names = {getattr(g, "__name__", str(g)) for g in torch.serialization.get_safe_globals()}
    assert "scalar" not in names and "Float64DType" not in names


@pytest.mark.parametrize("value", [np.float32(0.5), np.int64(3), np.array([1.0, 2.0])])
def test_other_numpy_objects_stay_refused(tmp_path, value):
    model = _original_resnet(11)
    ck = _resume_dict(model)
    ck["best_mAP"] = value
    path = tmp_path / "ck.pt"
    torch.save(ck, path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="non-tensor objects|numpy"):
        load_checkpoint(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("dropout", [False, True])
def test_nine_class_checkpoint_gets_tools_and_tissue_at_8(tmp_path, dropout):
    model = _original_resnet(9, dropout=dropout, seed=1)
    path = tmp_path / "miccai2018_9class_best_checkpoint.pth.tar"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded, info = load_checkpoint(path)
    assert info.classes == tuple(MICCAI18_TOOLS) + ("tissue",)
    assert info.classes.index("tissue") == 8 and info.num_classes == 9
    assert info.classes[:8] == SURGICAL_CLASSES[:8]
    assert info.input_size == (256, 320) and info.mean is not None
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_nine_class_resume_dict(tmp_path):
    model = _original_resnet(9, seed=2)
    path = tmp_path / "ck.pt"
    torch.save(_resume_dict(model), path)
    _, info = load_checkpoint(path)
    assert info.classes[8] == "tissue" and info.form == "resume"


def test_original_nine_group_gt_bbox_file(tmp_path):
    groups = [[0, 0, 0, 0]] * 9
    groups[1] = [12, 40, 118, 131]
    groups[6] = [300, 200, 640, 512]
    groups[8] = [0, 0, 1280, 1024]
    lines = []
    for f in (0, 1):
        lines.append(", ".join([f"frame{f:03d}"] + [",".join(map(str, g)) for g in groups]))
    p = tmp_path / "seq_1.txt"
    p.write_text("\n".join(lines) + "\n")
    boxes = read_gt_bbox(p)
    assert sorted(boxes) == [0, 1]
    assert boxes[0] == {1: (12, 40, 118, 131), 6: (300, 200, 640, 512), TISSUE: (0, 0, 1280, 1024)}
