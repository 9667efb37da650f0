"""``recipe="paper"`` equals the original scripts' features; the default differs only by rule.

The first half of this file is a re-implementation of the rules of
PangWinnie0219/GradCAMDownstreamTask, transcribed from its code (per frame, per class, per box
loops, numpy / PIL / cv2 as there): ``utils/gradcam_library.py`` (GradCAM), ``utils/
bbox_library.py`` (form_bboxes, plot_multiplebbox, crop_multibbox, scale_bbox, extract_feature,
extract_feature_all, heatmap_extract_feature), ``bbox_extract_feature.py`` / ``heatmap_extract_
feature.py`` (the ``resnet_50`` deep-copied feature model, made while the model is in train
mode; the test transforms with the extraction normalisation; batch size 1) and
``image_extract_feature.py`` (``myResnet`` in eval mode on the PNG crops, ``Resize((224, 224))``
+ ``ToTensor()``, no ``Normalize``). Only file paths, argparse and printing are left out.
"""

import copy
import dataclasses
import os

import cv2
import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from gcfeat.boxes import Boxes, heatmap_to_boxes
from gcfeat.cam import GradCAM
from gcfeat.data.classes import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.data.transforms import to_input
from gcfeat.extract import HeatmapExtractor, RoiExtractor
from gcfeat.extract.pipeline import extract_dataset
from gcfeat.extract.recipe import DEFAULT, PAPER, PAPER_MEAN, PAPER_STD, RecipeError, get_recipe
from gcfeat.models import build_classifier

H, W = 96, 128  # layer2 12x16, layer3 6x8, layer4 3x4 (strides divide the frame)
SRC = (120, 150)  # source frames, shrunk by PIL (anti-aliased) as the original's Resize
NCLS = len(SURGICAL_CLASSES)
T, PRED_THR = 0.3, 0.5
SCALE = H * W / (256 * 320)  # the original's thresholds were for 256x320 frames


# ============================================================ the original, transcribed
class OrigGradCAM:
    """gradcam_library.BaseCAM / GradCAM: model.eval(), raw-logit target, mean gradient
    weights, ReLU, per-image min-max (+1e-7) and cv2.resize, aggregate, min-max again."""

    def __init__(self, model, target_layers):
        self.model = model.eval()
        self.target_layers = target_layers

    @staticmethod
    def scale_cam_image(cam, target_size=None):
        result = []
        for img in cam:
            img = img - np.min(img)
            img = img / (1e-7 + np.max(img))
            if target_size is not None:
                img = cv2.resize(img, target_size)
            result.append(img)
        return np.float32(result)

    def __call__(self, input_tensor, target_category, target_size=None):
        acts = []
        handle = self.target_layers[0].register_forward_hook(lambda m, i, o: acts.append(o))
        try:
            output = self.model(input_tensor)
        finally:
            handle.remove()
        loss = output[0, target_category]
        grads = torch.autograd.grad(loss, acts[0])[0].detach().numpy()
        activations = acts[0].detach().numpy()
        weights = np.mean(grads, axis=(2, 3))
        cam = (weights[:, :, None, None] * activations).sum(axis=1)
        cam[cam < 0.0] = 0
        if target_size is None:
            target_size = (input_tensor.size(-1), input_tensor.size(-2))
        scaled = self.scale_cam_image(cam, target_size)[:, None, :]
        result = np.mean(np.maximum(scaled, 0), axis=1)
        return self.scale_cam_image(result)


def form_bboxes(grey_img, threshold):
    coordinate_list = []
    ret, thresh = cv2.threshold(grey_img, threshold, 255, cv2.THRESH_BINARY)
    thresh = thresh.astype(np.uint8)
    contours, hierarchy = cv2.findContours(thresh, 1, 2)
    for cnt in contours:
        x, y, w, h = cv2.boundingRect(cnt)
        if w * h > 25:
            coordinate_list.append([x, y, x + w, y + h])
    return coordinate_list


def plot_multiplebbox(cam, input_tensor, pred_cls, threshold, ncls):
    coordinate_list_all_cls = []
    for cls in range(ncls):
        if pred_cls[cls]:
            grayscale_cam = cam(input_tensor=input_tensor, target_category=cls)[0, :]
            coordinate_list_all_cls.append([cls, form_bboxes(grayscale_cam, threshold)])
        else:
            coordinate_list_all_cls.append([cls, []])
    return coordinate_list_all_cls


def union(coordinate_list):
    return [
        min(x[0] for x in coordinate_list),
        min(x[1] for x in coordinate_list),
        max(x[2] for x in coordinate_list),
        max(x[3] for x in coordinate_list),
    ]


def crop_multibbox(rgb_img, coordinate_list_all_cls, frame_path, ncls):
    nor_img = cv2.cvtColor(rgb_img, cv2.COLOR_BGR2RGB)
    nor_img = 255 * ((nor_img - np.min(nor_img)) / (np.max(nor_img) - np.min(nor_img)))
    nor_img = nor_img.astype(np.uint8)
    for cls in range(len(coordinate_list_all_cls) - 1):
        for i, (x1, y1, x2, y2) in enumerate(coordinate_list_all_cls[cls][1]):
            cv2.imwrite(frame_path + f"_{cls}_{i}_{x1},{y1},{x2},{y2}.png", nor_img[y1:y2, x1:x2])
    coordinate_list = coordinate_list_all_cls[ncls - 1][1]
    if coordinate_list:
        x1, y1, x2, y2 = union(coordinate_list)
        cv2.imwrite(frame_path + f"_10_0_{x1},{y1},{x2},{y2}.png", nor_img[y1:y2, x1:x2])


class myResnet(nn.Module):
    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, img, pool_size=(512, 1, 1)):
        x = img.unsqueeze(0)
        x = self.resnet.conv1(x)
        x = self.resnet.bn1(x)
        x = self.resnet.relu(x)
        x = self.resnet.maxpool(x)
        x = self.resnet.layer1(x)
        x = self.resnet.layer2(x)
        x = self.resnet.layer3(x)
        x = self.resnet.layer4(x)
        att = F.adaptive_avg_pool2d(x, [pool_size[1], pool_size[2]]).permute(0, 2, 3, 1)
        if att.size()[3] != pool_size[0]:
            att = F.adaptive_avg_pool2d(att, [pool_size[1], pool_size[0]]).permute(0, 1, 2, 3)
        return torch.flatten(att)


def image_extract_feature(model, root, pool_size):
    """{(frame, cls, box): feature} of every PNG crop under root."""
    preprocess = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    my_resnet = myResnet(model)
    my_resnet.eval()
    out = {}
    for name in sorted(os.listdir(root)):
        img = preprocess(Image.open(os.path.join(root, name)).convert("RGB"))
        with torch.no_grad():
            att = my_resnet(img, pool_size)
        frame, cls, _, box = name[:-4].split("_")
        out[(int(frame[5:]), int(cls), tuple(int(v) for v in box.split(",")))] = att.numpy()
    return out


class resnet_50(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.children_list = []
        self.model = model
        for n, c in self.model.named_children():
            self.children_list.append(c)
            if n == "layer2":
                self.children_list_2 = copy.deepcopy(self.children_list)
            elif n == "layer3":
                self.children_list_3 = copy.deepcopy(self.children_list)
            elif n == "layer4":
                self.children_list_4 = copy.deepcopy(self.children_list)
        self.net2 = nn.Sequential(*self.children_list_2)
        self.net3 = nn.Sequential(*self.children_list_3)
        self.net4 = nn.Sequential(*self.children_list_4)

    def forward(self, x):
        return [self.net2(x), self.net3(x), self.net4(x)]


def scale_bbox(coordinates, feature_map_size, imgw=W, imgh=H):
    x1, y1, x2, y2 = coordinates
    feature_map_x, feature_map_y = feature_map_size
    x1 = int(round(x1 * feature_map_x / imgw))
    y1 = int(round(y1 * feature_map_y / imgh))
    x2 = int(round(x2 * feature_map_x / imgw))
    y2 = int(round(y2 * feature_map_y / imgh))
    if x2 - x1 == 0:
        if x2 != feature_map_x:
            x2 = x1 + 1
        else:
            x1 = x1 - 1
    if y2 - y1 == 0:
        if y2 != feature_map_y:
            y2 = y1 + 1
        else:
            y1 = y1 - 1
    return [int(x1), int(y1), int(x2), int(y2)]


def extract_feature(coordinate, feature_outputs, threshold, pool_size):
    x1, y1, x2, y2 = coordinate
    bbox_size = (x2 - x1) * (y2 - y1)
    if bbox_size < threshold[0]:
        feature_layer = feature_outputs[0]
    elif bbox_size < threshold[1]:
        feature_layer = feature_outputs[1]
    else:
        feature_layer = feature_outputs[2]
    feature_size = feature_layer.size()
    s = scale_bbox(coordinate, [feature_size[3], feature_size[2]])
    bbox_feature = feature_layer[:, :, s[1] : s[3], s[0] : s[2]]
    att = F.adaptive_avg_pool2d(bbox_feature, [pool_size[1], pool_size[2]]).permute(0, 2, 3, 1)
    if att.size()[3] != pool_size[0]:
        att = F.adaptive_avg_pool2d(att, [pool_size[1], pool_size[0]]).permute(0, 1, 2, 3)
    return torch.flatten(att)


def extract_feature_all(frame, coordinate_list_all_cls, feature_outputs, threshold, pool_size, ncls):
    out = {}
    for cls in range(len(coordinate_list_all_cls) - 1):
        for box in coordinate_list_all_cls[cls][1]:
            att = extract_feature(box, feature_outputs, threshold, pool_size)
            out[(frame, cls, tuple(box))] = att.detach().numpy()
    coordinate_list = coordinate_list_all_cls[ncls - 1][1]
    if coordinate_list:
        box = union(coordinate_list)
        att = extract_feature(box, feature_outputs, threshold, pool_size)
        out[(frame, 10, tuple(box))] = att.detach().numpy()
    return out


def heatmap_extract_feature(frame, cam, pred_cls, input_tensor, feature_outputs, threshold, pool_size, ncls):
    feature_map = feature_outputs[2]
    c, h, w = feature_map.shape[1:]
    out = {}
    for cls in range(ncls):
        if not pred_cls[cls]:
            continue
        heat_map = torch.from_numpy(cam(input_tensor=input_tensor, target_category=cls, target_size=(w, h)))
        heat_map = heat_map.expand(c, 1, h, w)
        feature_map_cls = feature_map[heat_map[None, :, 0] > threshold]
        if feature_map_cls.numel() == 0:  # the original crashed here
            out[(frame, cls)] = None
            continue
        att = F.adaptive_avg_pool1d(feature_map_cls[None, None], [pool_size[0]]).permute(2, 0, 1)
        att = F.adaptive_avg_pool2d(att[None], [pool_size[1], pool_size[2]]).permute(0, 1, 2, 3)
        out[(frame, cls)] = torch.flatten(att).detach().numpy()
    return out


def original_run(model, frames, tmp, pool_size, area_threshold):
    """The scripts' loops over frames (batch size 1): M1, M2, M3 as dicts keyed by row."""
    test_transforms = transforms.Compose(
        [
            transforms.Resize((H, W)),
            transforms.ToTensor(),
            transforms.Normalize([0.4084945, 0.25513682, 0.25353566], [0.22662906, 0.20201652, 0.1962526]),
        ]
    )
    transforms_wo_nor = transforms.Compose([transforms.Resize((H, W)), transforms.ToTensor()])
    model = copy.deepcopy(model).train()  # freshly loaded: train mode
    feature_model = resnet_50(model)  # deep copies made in train mode
    model.eval()
    target_layers = [model.layer4[-1]]
    crops = tmp / f"crops_{pool_size[0]}"
    crops.mkdir()
    m2, m3 = {}, {}
    for idx, frame in enumerate(frames):
        img = Image.fromarray(frame)
        inputs = test_transforms(img)[None]
        rgb_img = transforms_wo_nor(img)[None][0].numpy().transpose(1, 2, 0)
        outputs_tool = model.forward(inputs)
        pred = torch.sigmoid(outputs_tool[0]).detach().numpy()
        score = np.array(pred > PRED_THR, dtype=float)
        cam = OrigGradCAM(model=model, target_layers=target_layers)
        coords = plot_multiplebbox(cam, inputs, score, T, NCLS)
        crop_multibbox(rgb_img, coords, str(crops / f"frame{idx:03d}"), NCLS)
        feature_outputs = feature_model(inputs)
        m2.update(extract_feature_all(idx, coords, feature_outputs, area_threshold, pool_size, NCLS))
        m3.update(heatmap_extract_feature(idx, cam, score, inputs, feature_outputs, T, pool_size, NCLS))
    m1 = image_extract_feature(model, crops, pool_size)
    return m1, m2, m3


# ============================================================ gcfeat side
class Frames(Dataset):
    """uint8 frames prepared as a recipe asks (normalisation, PIL / OpenCV resize)."""

    def __init__(self, frames, recipe):
        self.frames = frames
        kw = recipe.dataset_kwargs()
        self.mean = kw.get("mean", SURGICAL_MEAN)
        self.std = kw.get("std", SURGICAL_STD)
        self.resize = kw["resize"]

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return {
            "image": to_input(self.frames[i], (H, W), self.mean, self.std, self.resize),
            "labels": torch.zeros(NCLS),
            "video": "seq_1",
            "frame_index": i,
        }


def read_rows(path, method):
    with h5py.File(path, "r") as f:
        g = f["seq_1"][method]
        return (g["frame"][:], g["label"][:], g["box"][:].astype(int), g["features"][:], g["empty"][:])


def frames_and_model(seed=0, n=3):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):  # smooth colour fields: CAM blobs of several sizes
        small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        big = cv2.resize(small, (SRC[1], SRC[0]), interpolation=cv2.INTER_CUBIC)
        frames.append(np.clip(big.astype(int) + rng.integers(-20, 21, big.shape), 0, 255).astype(np.uint8))
    torch.manual_seed(seed)
    model = build_classifier("resnet18", num_classes=NCLS)
    with torch.no_grad():  # running statistics far from any frame's own
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.fc.bias.copy_(torch.tensor([4.0 if k in (1, 3, 6, 10) else -4.0 for k in range(NCLS)]))
    return frames, model.eval()


INFO = dict(
    classes=list(SURGICAL_CLASSES), arch="resnet18", input_size=(H, W), mean=SURGICAL_MEAN, std=SURGICAL_STD
)


def run_gcfeat(tmp, frames, model, recipe, layout, methods=("m1", "m2", "m3"), **kw):
    from types import SimpleNamespace

    out = tmp / f"{get_recipe(recipe).name}_{layout[0]}_{''.join(methods)}.h5"
    extract_dataset(
        Frames(frames, get_recipe(recipe)),
        model,
        SimpleNamespace(**INFO),
        methods=methods,
        threshold=T,
        pred_threshold=PRED_THR,
        out=str(out),
        batch_size=8,
        num_workers=0,
        progress=False,
        layout=layout,
        recipe=recipe,
        **kw,
    )
    return out


def as_dict(rows, with_box=True):
    frame, label, box, feats, empty = rows
    keys = [
        (int(f), int(lb), tuple(b.tolist())) if with_box else (int(f), int(lb))
        for f, lb, b in zip(frame, label, box)
    ]
    assert len(set(keys)) == len(keys)
    return dict(zip(keys, feats)), dict(zip(keys, empty))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    frames, model = frames_and_model()
    return tmp_path_factory.mktemp("paper"), frames, model


@pytest.mark.parametrize("layout", [(512, 1, 1), (32, 4, 4)])
def test_paper_recipe_equals_the_original_scripts(setup, layout):
    tmp, frames, model = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if layout[0] == 512:  # resnet18's layer2 / layer3 have 128 / 256 channels: layer4 only
        area, kw = [0, 0], dict(single_layer="layer4")
    else:
        area, kw = [5120 * SCALE, 20480 * SCALE], {}
    m1_ref, m2_ref, m3_ref = original_run(model, frames, tmp, layout, area)
    path = run_gcfeat(tmp, frames, model, "paper", layout, **kw)

    # the user's model is left as it was: eval mode, same weights and running statistics
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    for method, ref in (("m1", m1_ref), ("m2", m2_ref)):
        got, _ = as_dict(read_rows(path, method))
        assert set(got) == set(ref), method  # same boxes (RETR_LIST, tissue union)
        assert len(ref) >= 6
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], atol=1e-4, rtol=0, err_msg=f"{method} {key}")
    got, empty = as_dict(read_rows(path, "m3"), with_box=False)
    assert set(got) == set(ref for ref in m3_ref)
    for key, ref in m3_ref.items():
        if ref is None:
            assert empty[key] and not got[key].any()
        else:
            np.testing.assert_allclose(got[key], ref, atol=1e-4, rtol=0, err_msg=f"m3 {key}")
    levels = {(b[2] - b[0]) * (b[3] - b[1]) >= 20480 * SCALE for (_, _, b) in m2_ref}
    if layout[0] == 32:  # the routing was exercised on more than one level
        assert levels == {True, False}
    with h5py.File(path, "r") as f:
        assert "recipe" in f.attrs


def test_paper_differs_from_default(setup):
    """Sanity: the rules matter on this model (per-frame BN, constants, resizing)."""
    tmp, frames, model = setup
    paths = [
        run_gcfeat(tmp, frames, model, r, (32, 4, 4), methods=("m2", "m3"), weighting="mask")
        for r in ("paper", "default")
    ]
    for method, with_box in (("m2", True), ("m3", False)):
        a, b = (as_dict(read_rows(p, method), with_box)[0] for p in paths)
        common = set(a) & set(b)  # m2: the boxes themselves mostly differ
        assert len(common) >= (1 if method == "m2" else 4)
        for key in common:
            assert np.abs(a[key] - b[key]).max() > 1e-2
    with h5py.File(paths[0], "r") as f:
        import json

        attrs = {k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for k, v in f.attrs.items()}
    assert attrs["recipe"]["name"] == "paper"
    assert np.allclose(attrs["mean"], PAPER_MEAN) and np.allclose(attrs["std"], PAPER_STD)
    with h5py.File(paths[1], "r") as f:
        assert "recipe" not in f.attrs


# ============================================================ one rule at a time
def _cam_pass(model, x):
    with GradCAM(model, [model.layer4]) as cam:
        return cam.explain(x, extra_layers=(model.layer2, model.layer3))


def _frames_tensor(frames, recipe):
    ds = Frames(frames, recipe)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def test_m2_slice_vs_roi_align_is_the_only_difference_on_grid_boxes(setup):
    """Eval-mode BN, the same constants, one grid cell: slicing == roi_align on boxes that lie
    on every map's grid; they differ on boxes that do not."""
    _, frames, model = setup
    x = _frames_tensor(frames, DEFAULT)
    res = _cam_pass(model, x)
    slicing = dataclasses.replace(DEFAULT, name="slice-only", m2_pool="slice")
    on_grid = torch.tensor(
        [[0, 0, 32, 32], [32, 0, 96, 64], [64, 32, 128, 96], [0, 0, 128, 96], [96, 64, 128, 96]],
        dtype=torch.float32,
    )
    off_grid = on_grid + torch.tensor([5.0, 3.0, -7.0, -5.0])
    frame = torch.tensor([0, 1, 2, 0, 1])
    for xyxy, equal in ((on_grid, True), (off_grid, False)):
        boxes = Boxes(xyxy, frame, torch.tensor([1, 3, 6, 10, 1]), torch.ones(5))
        a = RoiExtractor(layout=(128, 1, 1))(x, res, boxes).features
        b = RoiExtractor(layout=(128, 1, 1), recipe=slicing)(x, res, boxes).features
        assert torch.allclose(a, b, atol=1e-5) == equal


def test_m3_broadcast_is_the_masked_group_mean_of_the_default(setup):
    """Eval-mode BN, mask weighting: the paper's M3 at 512x1x1 is the default's; at 32x4x4 it
    is the default's (32, 1, 1) group means, each copied into the 16 cells."""
    _, frames, model = setup
    x = _frames_tensor(frames, DEFAULT)
    res = _cam_pass(model, x)
    probs = res.logits.sigmoid()
    none = Boxes.empty(2, x.device)
    eval_paper = dataclasses.replace(PAPER, name="paper-eval-bn", bn="eval")
    a = HeatmapExtractor(T, "mask", layout=(512, 1, 1))(x, res, none, probs)
    b = HeatmapExtractor(T, layout=(512, 1, 1), recipe=eval_paper)(x, res, none, probs)
    assert len(a) >= 4 and torch.allclose(a.features, b.features, atol=1e-5)
    g = HeatmapExtractor(T, "mask", layout=(32, 1, 1))(x, res, none, probs).features
    p = HeatmapExtractor(T, layout=(32, 4, 4), recipe=eval_paper)(x, res, none, probs).features
    assert torch.allclose(p.reshape(-1, 32, 16), g[:, :, None].expand(-1, 32, 16), atol=1e-5)
    d = HeatmapExtractor(T, "mask", layout=(32, 4, 4))(x, res, none, probs).features
    assert not torch.allclose(p, d, atol=1e-3)  # the default pools each cell


def test_per_frame_batchnorm_alone_changes_m3(setup):
    """Only bn differs: the maps are those of a train-mode copy run on each frame alone."""
    _, frames, model = setup
    x = _frames_tensor(frames, DEFAULT)
    res = _cam_pass(model, x)
    probs = res.logits.sigmoid()
    none = Boxes.empty(2, x.device)
    frame_bn = dataclasses.replace(DEFAULT, name="frame-bn", bn="frame")
    a = HeatmapExtractor(T, "mask", layout=(512, 1, 1))(x, res, none, probs)
    b = HeatmapExtractor(T, "mask", layout=(512, 1, 1), recipe=frame_bn, model=model)(x, res, none, probs)
    rel = (a.features - b.features).norm(dim=1) / a.features.norm(dim=1)
    assert rel.min() > 0.1
    train_copy = copy.deepcopy(model).train()
    with torch.no_grad():
        maps = torch.cat(
            [nn.Sequential(*list(train_copy.children())[:-2])(x[i : i + 1]) for i in range(len(x))]
        )
    res_train = dataclasses.replace(res, activations=[maps])
    c = HeatmapExtractor(T, "mask", layout=(512, 1, 1))(x, res_train, none, probs)
    assert torch.allclose(b.features, c.features, atol=1e-4)


def test_contours_list_is_the_originals_form_bboxes():
    rng = np.random.default_rng(3)
    heat = np.zeros((4, 40, 56), np.float32)
    heat[0, 5:35, 5:50] = 0.9
    heat[0, 12:25, 15:30] = 0.1  # a hole
    heat[1] = cv2.GaussianBlur(rng.random((40, 56)).astype(np.float32), (0, 0), 3)
    heat[1] = (heat[1] - heat[1].min()) / (heat[1].max() - heat[1].min())
    heat[2, 2:38, 2:54] = 0.8
    heat[2, 8:14, 8:14] = 0.0  # small hole: its box 8x8 > 25 is kept
    heat[2, 20:22, 30:32] = 0.0  # tiny hole: box 4x4 dropped
    heat[3, 10:30, 10:30] = 0.5
    got = heatmap_to_boxes(torch.from_numpy(heat)[None], T, contours="list")
    ref = sorted((k, *b) for k in range(4) for b in form_bboxes(heat[k], T))
    assert sorted((int(lb), *map(int, b)) for lb, b in zip(got.label, got.xyxy)) == ref
    outer = heatmap_to_boxes(torch.from_numpy(heat)[None], T)
    assert len(outer) < len(got)


def test_paper_refuses_frames_prepared_for_the_default(setup, tmp_path):
    _, frames, model = setup
    out = tmp_path / "x.h5"
    from types import SimpleNamespace

    with pytest.raises(RecipeError, match="resize"):
        extract_dataset(
            Frames(frames, DEFAULT),
            model,
            SimpleNamespace(**INFO),
            methods=("m2",),
            out=str(out),
            num_workers=0,
            progress=False,
            layout=(32, 4, 4),
            recipe="paper",
        )
    assert not out.exists()
    with pytest.raises(RecipeError, match="expected one of"):
        get_recipe("papper")
    assert PAPER.mean == PAPER_MEAN and PAPER.std == PAPER_STD


def test_cli_recipe_paper(tmp_path):
    """``--recipe paper``: frames prepared with the extraction constants and PIL; MRI refused."""
    from gcfeat.cli.synthetic import main as synth
    from gcfeat.extract.__main__ import main as extract
    from gcfeat.models import save_checkpoint

    assert (
        synth(
            [
                "--layout",
                "miccai18",
                "--out",
                str(tmp_path / "data"),
                "--videos",
                "1",
                "--frames",
                "2",
                "--size",
                f"{H}x{W}",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    _, model = frames_and_model()
    save_checkpoint(
        tmp_path / "ck.pt",
        model,
        classes=SURGICAL_CLASSES,
        arch="resnet18",
        input_size=(H, W),
        mean=SURGICAL_MEAN,
        std=SURGICAL_STD,
    )
    out = tmp_path / "f.h5"
    assert (
        extract(
            [
                "--data",
                str(tmp_path / "data"),
                "--checkpoint",
                str(tmp_path / "ck.pt"),
                "--methods",
                "m2",
                "m3",
                "--out",
                str(out),
                "--workers",
                "0",
                "--no-progress",
                "--recipe",
                "paper",
            ]
        )
        == 0
    )
    with h5py.File(out, "r") as f:
        assert '"paper"' in f.attrs["recipe"] and "0.4084945" in f.attrs["mean"]
    assert (
        extract(
            [
                "--task",
                "organ3d",
                "--data",
                str(tmp_path),
                "--checkpoint",
                str(tmp_path / "ck.pt"),
                "--out",
                str(tmp_path / "o.h5"),
                "--recipe",
                "paper",
            ]
        )
        == 2
    )
    assert not (tmp_path / "o.h5").exists()
