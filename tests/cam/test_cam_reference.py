"""Every method against plain per-class (and, for Score-CAM, per-channel) reference loops.

The references are written from the papers' formulas (with pytorch-grad-cam's eps values),
one class and one image at a time, without any gcfeat code: 3D on the 3D ResNet, Score-CAM also
in 2D.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gcfeat.cam as gc
from gcfeat.models.resnet3d import ResNet3d, resnet3d_10, resnet3d_18

TOL = 1e-5


# one OpenMP thread: CAM tests run many small ops, which extra threads only slow down
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- reference maths


def _post(raw_per_layer, size):
    """Reference post-processing of one image: ReLU, min-max, resize, mean, min-max."""
    mode = {2: "bilinear", 3: "trilinear"}[len(size)]
    maps = []
    for raw in raw_per_layer:
        m = raw.clamp_min(0)
        m = m - m.min()
        m = m / (m.max() + 1e-7)
        maps.append(F.interpolate(m[None, None], size=size, mode=mode, align_corners=False)[0, 0])
    m = torch.stack(maps).mean(0)
    m = m - m.min()
    return m / (m.max() + 1e-7)


def _sp(t):  # spatial dims of a (C, *s) tensor
    return tuple(range(1, t.ndim))


def _gradcam(a, g, W=None):
    return (g.mean(_sp(g), keepdim=True) * a).sum(0)


def _gradcampp(a, g, W=None):
    g2, g3 = g**2, g**3
    s = a.sum(_sp(a), keepdim=True)
    aij = g2 / (2 * g2 + s * g3 + 1e-6)
    aij = torch.where(g != 0, aij, torch.zeros_like(aij))
    return ((g.clamp_min(0) * aij).sum(_sp(g), keepdim=True) * a).sum(0)


def _xgradcam(a, g, W=None):
    s = a.sum(_sp(a), keepdim=True)
    return ((g * a / (s + 1e-7)).sum(_sp(g), keepdim=True) * a).sum(0)


def _hirescam(a, g, W=None):
    return (g * a).sum(0)


def _layercam(a, g, W=None):
    return (g.clamp_min(0) * a).sum(0)


FORMULAS = {
    "GradCAM": _gradcam,
    "GradCAMPlusPlus": _gradcampp,
    "XGradCAM": _xgradcam,
    "HiResCAM": _hirescam,
    "LayerCAM": _layercam,
}


def _reference_gradient(model, layers, x, method):
    """(B, K, *spatial): one forward + backward per image and class."""
    K = model(x[:1]).shape[1]
    out = torch.zeros(x.shape[0], K, *x.shape[2:])
    for b in range(x.shape[0]):
        for k in range(K):
            store = []
            hooks = [m.register_forward_hook(lambda mod, i, o: store.append(o)) for m in layers]
            logit = model(x[b : b + 1])[0, k]
            for h in hooks:
                h.remove()
            grads = torch.autograd.grad(logit, store)
            raws = [FORMULAS[method](a[0].detach(), g[0]) for a, g in zip(store, grads)]
            out[b, k] = _post(raws, x.shape[2:])
    return out


def _reference_cam(model, layer, x):
    K = model.fc.out_features
    out = torch.zeros(x.shape[0], K, *x.shape[2:])
    store = []
    h = layer.register_forward_hook(lambda mod, i, o: store.append(o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    for b in range(x.shape[0]):
        for k in range(K):
            a = store[0][b]
            raw = (model.fc.weight[k].view(-1, *[1] * (a.ndim - 1)) * a).sum(0)
            out[b, k] = _post([raw.detach()], x.shape[2:])
    return out


def _reference_scorecam(model, layer, x, classes, scoring):
    """Per image, per class, per channel: a masked forward each (nothing shared)."""
    store = []
    h = layer.register_forward_hook(lambda mod, i, o: store.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    acts = store[0]
    mode = {2: "bilinear", 3: "trilinear"}[x.ndim - 2]
    out = torch.zeros(x.shape[0], len(classes), *x.shape[2:])
    with torch.no_grad():
        for b in range(x.shape[0]):
            for j, k in enumerate(classes):
                scores = []
                for c in range(acts.shape[1]):
                    a = acts[b, c]
                    constant = bool(a.max() == a.min())
                    if scoring == "paper" and constant:
                        scores.append(torch.tensor(0.0))
                        continue
                    up = F.interpolate(a[None, None], size=x.shape[2:], mode=mode, align_corners=False)[0, 0]
                    if constant:
                        mask = torch.zeros_like(up)
                    else:
                        eps = 0.0 if scoring == "paper" else 1e-8
                        mask = (up - up.min()) / (up.max() - up.min() + eps)
                    logits = model((x[b] * mask)[None])[0]
                    scores.append(logits.softmax(0)[k] if scoring == "paper" else logits[k])
                w = torch.stack(scores)
                if scoring != "paper":
                    w = w.softmax(0)
                raw = (w.view(-1, *[1] * (acts.ndim - 2)) * acts[b]).sum(0)
                out[b, j] = _post([raw], x.shape[2:])
    return out


# ---------------------------------------------------------------------------- models


def _resnet3d():
    torch.manual_seed(0)
    return resnet3d_10(num_classes=3, widths=(4, 6, 8, 8)).eval()


def _x3d(b=2):
    torch.manual_seed(1)
    return torch.randn(b, 1, 18, 20, 22)  # layer4: 3x3x3


# ---------------------------------------------------------------------------- tests


def test_resnet3d_shapes_and_stems():
    m = resnet3d_18(num_classes=11)
    assert m.fc.in_features == 512 and m.conv1.stride == (1, 1, 1)
    small = resnet3d_18(num_classes=11, widths=(4, 4, 8, 8))
    assert small.forward_features(torch.rand(1, 1, 28, 28, 28)).shape == (1, 8, 4, 4, 4)
    assert small(torch.rand(2, 1, 28, 28, 28)).shape == (2, 11)
    big = ResNet3d((1, 1, 1, 1), 2, in_channels=3, small_input=False, widths=(4, 4, 4, 4), dropout=0.2)
    assert big.forward_features(torch.rand(1, 3, 64, 64, 64)).shape == (1, 4, 2, 2, 2)
    assert isinstance(big.fc, torch.nn.Sequential) and big.fc[1].out_features == 2
    assert [n for n, _ in m.named_children()] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    with pytest.raises(ValueError, match="expected input"):
        m(torch.rand(1, 1, 28, 28))


@pytest.mark.parametrize("method", sorted(FORMULAS))
def test_gradient_methods_3d_match_reference_loop(method):
    model, x = _resnet3d(), _x3d()
    ref = _reference_gradient(model, [model.layer4], x, method)
    assert ref.amax() > 0.99 and (ref < 0.5).any()  # non-trivial maps
    for cf in ("auto", False):
        res = getattr(gc, method)(model, [model.layer4], closed_form=cf).explain(x)
        assert res.heatmap.shape == (2, 3, 18, 20, 22)
        assert (res.heatmap - ref).abs().max() <= TOL, cf
        assert res.layer_heatmaps[0].shape == (2, 3, 3, 3, 3)


def test_two_target_layers_3d_match_reference_loop():
    model, x = _resnet3d(), _x3d(1)
    layers = [model.layer3, model.layer4]
    for method in ("GradCAM", "LayerCAM"):
        ref = _reference_gradient(model, layers, x, method)
        heat = getattr(gc, method)(model, layers)(x)
        assert (heat - ref).abs().max() <= TOL


def test_cam_3d_matches_reference_and_gradcam():
    model, x = _resnet3d(), _x3d()
    heat = gc.CAM(model, [model.layer4])(x)
    assert (heat - _reference_cam(model, model.layer4, x)).abs().max() <= TOL
    assert (heat - gc.GradCAM(model, [model.layer4])(x)).abs().max() <= TOL


def test_eigencam_3d_matches_reference_svd():
    model, x = _resnet3d(), _x3d()
    res = gc.EigenCAM(model, [model.layer4]).explain(x, classes=[1])
    for b in range(2):
        a = res.activations[0][b].double()
        m = a.flatten(1).T
        m = m - m.mean(0)
        v = torch.linalg.svd(m, full_matrices=False).Vh[0]
        proj = (m @ v).reshape(a.shape[1:]).float()
        d = min((res.heatmap[b, 0] - _post([s * proj], x.shape[2:])).abs().max() for s in (1.0, -1.0))
        assert d <= 1e-4
        assert float(v.sum()) != 0.0


@pytest.mark.parametrize("scoring", ["paper", "pytorch-grad-cam"])
def test_scorecam_3d_matches_per_channel_per_class_loop(scoring):
    model, x = _resnet3d(), _x3d()
    classes = [2, 0]
    ref = _reference_scorecam(model, model.layer4, x, classes, scoring)
    for bs in (5, 64):  # chunk boundaries must not matter
        heat = gc.ScoreCAM(model, [model.layer4], scoring=scoring, batch_size=bs)(x, classes)
        assert heat.shape == (2, 2, 18, 20, 22)
        assert (heat - ref).abs().max() <= TOL


class _TinyNet2d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(8, 6, 3, 2, 1),
            torch.nn.ReLU(inplace=True),
        )
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("scoring", ["paper", "pytorch-grad-cam"])
def test_scorecam_2d_matches_per_channel_per_class_loop(scoring):
    torch.manual_seed(2)
    model = _TinyNet2d().eval()
    with torch.no_grad():  # one dead channel: constant maps are skipped / zero masks
        model.features[2].bias[3] = -100.0
    x = torch.randn(3, 3, 40, 52)
    ref = _reference_scorecam(model, model.features, x, [0, 1, 2, 3], scoring)
    res = gc.ScoreCAM(model, [model.features], scoring=scoring, batch_size=7).explain(x)
    assert (res.activations[0][:, 3] == 0).all()
    assert (res.heatmap - ref).abs().max() <= TOL
    # all classes cost one set of masked forwards: the map of one class is the same
    one = gc.ScoreCAM(model, [model.features], scoring=scoring)(x, classes=[2])
    assert (one[:, 0] - res.heatmap[:, 2]).abs().max() <= 1e-6


# ------------------------------------------------------------- Score-CAM with folded batch norm


def _randomise_bn(model, seed=3):
    """Non-trivial running stats and affine params, so that folding BN is not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
    return model


def test_fuse_conv_bn_folds_resnet_pairs_and_leaves_model_alone():
    import torchvision

    from gcfeat.cam.score_cam import fuse_conv_bn

    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=4).eval())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 48, 64)
    fused, n = fuse_conv_bn(model, torch.channels_last)
    assert n == 20  # stem + 2 per block x 8 + 3 downsample convs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 20
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # other tensors are shared, not copied
    assert fused.fc.weight is model.fc.weight
    # training mode: nothing folded, the model itself comes back
    model.train()
    assert fuse_conv_bn(model) == (model, 0)


def test_fuse_conv_bn_skips_pairs_with_unknown_dataflow():
    from gcfeat.cam.score_cam import fuse_conv_bn

    class Odd(torch.nn.Module):  # conv1 / bn1 names, but bn1 does not follow conv1
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv1(x) + self.bn1(x)

    model = _randomise_bn(torch.nn.Sequential(Odd(), torch.nn.Flatten(), torch.nn.Linear(48, 2)))
    assert fuse_conv_bn(model.eval()) == (model, 0)


@pytest.mark.parametrize("scoring", ["paper", "pytorch-grad-cam"])
def test_scorecam_3d_with_folded_bn_matches_loop_and_follows_weight_changes(scoring):
    model, x = _randomise_bn(_resnet3d()), _x3d()
    classes = [1, 2]
    cam = gc.ScoreCAM(model, [model.layer4], scoring=scoring, batch_size=16)
    ref = _reference_scorecam(model, model.layer4, x, classes, scoring)
    heat = cam(x, classes)
    assert (heat - ref).abs().max() <= TOL
    unfused = gc.ScoreCAM(model, [model.layer4], scoring=scoring, fuse_bn=False)(x, classes)
    assert (heat - unfused).abs().max() <= TOL
    # new weights between calls: no stale folded copy
    _randomise_bn(model, seed=7)
    ref2 = _reference_scorecam(model, model.layer4, x, classes, scoring)
    assert (ref2 - ref).abs().max() > 1e-3
    assert (cam(x, classes) - ref2).abs().max() <= TOL
