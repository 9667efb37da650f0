"""Any backbone end to end: CAM -> boxes -> M1 / M2 / M3 -> HDF5, each extractor against a
naive per-box loop (pytorch-grad-cam equality: test_backbones_pgc.py).

One small model per family (random init, 32-64 px inputs), torchvision and timm.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from backbone_zoo import FAMILIES, K
from backbone_zoo import build as _build
from torchvision.ops import roi_align

import gcfeat.cam as gc
from gcfeat.boxes import heatmap_to_boxes
from gcfeat.extract import build_extractors
from gcfeat.io.features import FeatureFile, FeatureWriter
from gcfeat.models.levels import ChannelsLast, TokenGrid, find_levels

LAYOUT = (8, 2, 2)


# --------------------------------------------------------------------------------------------
# naive references: one box / one row at a time


def _grid(level, out):
    """The level's map as (B, C, h, w), written out per layout (not through the level)."""
    if isinstance(level.reshape, TokenGrid):
        t = out[:, level.reshape.prefix_tokens :]
        side = math.isqrt(t.shape[1])
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    if isinstance(level.reshape, ChannelsLast):
        return out.permute(0, 3, 1, 2)
    return out


def _pool(region):
    """(C, h, w) -> LAYOUT features: adaptive average pool, then channel groups."""
    p0, p1, p2 = LAYOUT
    pooled = F.adaptive_avg_pool2d(region[None], (p1, p2))[0]
    return pooled.reshape(p0, -1, p1, p2).mean(1).flatten()


def _level_output(model, level, x):
    out = []
    h = level.module.register_forward_hook(
        lambda m, a, o: out.append(o.clone())
    )  # in-place ops follow (DenseNet)
    with torch.no_grad():
        model(x)
    h.remove()
    return _grid(level, out[-1])


def _naive_m1(model, level, images, boxes, size):
    rows = []
    for i in range(len(boxes.frame)):
        roi = torch.cat([torch.zeros(1), boxes.xyxy[i]])[None]
        crop = roi_align(images[int(boxes.frame[i])][None], roi, (size, size), 1.0, 1, True)
        rows.append(_pool(_level_output(model, level, crop)[0]))
    return torch.stack(rows)


def _naive_m2(maps, strides, boxes, size):
    rows = []
    for i in range(len(boxes.frame)):
        x1, y1, x2, y2 = boxes.xyxy[i].tolist()
        area = (x2 - x1) * (y2 - y1) * (256 * 320) / (size * size)
        want = 8 if area < 5120 else 16 if area < 20480 else 32
        lv = min(range(len(strides)), key=lambda j: (abs(math.log2(strides[j] / want)), j))
        fmap = maps[lv][int(boxes.frame[i])]
        s = fmap.shape[-1] / size
        roi = torch.tensor([[0.0, x1 * s, y1 * s, x2 * s, y2 * s]])
        region = roi_align(fmap[None], roi, LAYOUT[1:], 1.0, -1, True)[0]
        rows.append(region.reshape(LAYOUT[0], -1, *LAYOUT[1:]).mean(1).flatten())
    return torch.stack(rows)


def _naive_m3(act, heat, frame, label, threshold):
    rows = []
    p0, p1, p2 = LAYOUT
    h, w = act.shape[-2:]
    for f, k in zip(frame.tolist(), label.tolist()):
        wgt = heat[f, k] * (heat[f, k] > threshold)
        cells = []
        for i in range(p1):
            for j in range(p2):
                ys = slice(i * h // p1, -(-(i + 1) * h // p1))
                xs = slice(j * w // p2, -(-(j + 1) * w // p2))
                ww = wgt[ys, xs]
                a = act[f][:, ys, xs]
                cells.append((a * ww).sum((1, 2)) / ww.sum() if ww.sum() > 0 else torch.zeros(a.shape[0]))
        feats = torch.stack(cells, 1)  # (C, q)
        rows.append(feats.reshape(p0, -1, p1 * p2).mean(1).flatten())
    return torch.stack(rows)


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_levels_by_stride(family, one_thread):
    model, size, names = _build(family)
    levels = find_levels(model)
    assert [lv.name for lv in levels] == names
    strides = [lv.stride for lv in levels]
    assert strides == sorted(strides) and all(s == 2 ** round(math.log2(s)) for s in strides)
    x = torch.randn(1, 3, size, size)
    for lv in levels:  # the measured channels / strides are those of the reshaped output
        grid = _level_output(model, lv, x)
        assert grid.shape[1] == lv.channels and grid.shape[-1] * lv.stride == size


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cam_boxes_extractors_hdf5(family, tmp_path, one_thread):
    model, size, _ = _build(family)
    levels = find_levels(model)
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    cam = gc.GradCAM(model, [levels[-1].module])
    res = cam.explain(x, extra_layers=[(lv.module, lv.reshape) for lv in levels[:-1]])
    assert res.heatmap.shape == (2, K, size, size)
    assert res.activations[0].shape[1] == levels[-1].channels
    boxes = heatmap_to_boxes(res.heatmap, 0.5, min_area=0)
    assert len(boxes.frame) > 0
    probs = torch.full((2, K), 0.9)
    ext = build_extractors(
        model, ["m1", "m2", "m3"], threshold=0.5, layout=LAYOUT, crop_size=(size, size), pred_threshold=0.5
    )
    feats = {e.name: e(x, res, boxes, probs) for e in ext}
    maps = [*res.extra, res.activations[0]]
    torch.testing.assert_close(
        feats["m1"].features, _naive_m1(model, levels[-1], x, boxes, size), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        feats["m2"].features, _naive_m2(maps, [lv.stride for lv in levels], boxes, size), atol=1e-5, rtol=1e-5
    )
    m3 = feats["m3"]
    torch.testing.assert_close(
        m3.features,
        _naive_m3(res.activations[0], res.layer_heatmaps[0], m3.frame, m3.label, 0.5),
        atol=1e-5,
        rtol=1e-5,
    )
    dims = {k: v.dim for k, v in feats.items()}
    with FeatureWriter(tmp_path / "f.h5", {"arch": family}, dims, K) as w:
        w.write(["v", "v"], [0, 1], probs, feats)
    ff = FeatureFile(tmp_path / "f.h5")
    got = sum(len(ff["v"].frame(i)["m2"]["features"]) for i in range(2))
    assert got == len(feats["m2"])


@pytest.mark.parametrize(
    "arch,options,size",
    [("swin_t", {}, 64), ("vit_b_16", {"image_size": 32}, 32), ("efficientnet_b0", {}, 64)],
)
def test_extract_dataset_runs_on_any_backbone(arch, options, size, tmp_path, one_thread):
    """The dataset -> HDF5 job, unchanged, on a classifier from models.zoo (BN folding on)."""
    from gcfeat.data import SURGICAL_CLASSES, build_dataset
    from gcfeat.data.synthetic import write_miccai18
    from gcfeat.extract.pipeline import extract_dataset
    from gcfeat.models import CheckpointInfo, build_classifier

    write_miccai18(tmp_path / "d", num_videos=1, num_frames=3, size=(size, size), seed=1, progress=False)
    ds = build_dataset(tmp_path / "d", "miccai18", split="all", size=(size, size), with_gt=False)
    torch.manual_seed(0)
    model = build_classifier(arch, len(SURGICAL_CLASSES), **options).eval()
    if arch.startswith("vit"):  # torchvision zero-inits the ViT head: all maps would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    info = CheckpointInfo(
        path="-",
        form="test",
        arch=arch,
        num_classes=len(SURGICAL_CLASSES),
        classes=tuple(SURGICAL_CLASSES),
        dropout=0.0,
        input_size=(size, size),
    )
    out = tmp_path / "f.h5"
    stats = extract_dataset(
        ds,
        model,
        info,
        methods=("m1", "m2", "m3"),
        out=str(out),
        threshold=0.5,
        pred_threshold=0.0,
        batch_size=3,
        num_workers=0,
        progress=False,
        layout=LAYOUT,
        crop_size=(size, size),
    )
    assert stats["frames"] == 3 and min(stats["rows"].values()) > 0
    with FeatureFile(out) as ff:
        rows = sum(len(ff[v].frame(i)["m2"]["features"]) for v in ff.videos for i in range(3))
    assert rows == stats["rows"]["m2"]
