"""gcfeat.cam engine: API, closed form vs general path, hygiene, fallbacks, errors, memory."""

from __future__ import annotations

import copy
import gc as pygc
import warnings

import pytest
import torch
import torch.nn as nn
import torchvision

import gcfeat.cam as gc
from gcfeat.cam import CAMError

GRAD_METHODS = [gc.GradCAM, gc.GradCAMPlusPlus, gc.XGradCAM, gc.HiResCAM, gc.LayerCAM]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# one OpenMP thread: CAM tests run many small ops, which extra threads only slow down
pytestmark = pytest.mark.usefixtures("one_thread")


def _resnet(k=5, dropout=False, seed=0):
    torch.manual_seed(seed)
    m = torchvision.models.resnet18(num_classes=k)
    if dropout:
        m.fc = nn.Sequential(nn.Dropout(0.5), m.fc)
    return m.eval()


def _x(b=2, h=64, w=96, seed=1):
    torch.manual_seed(seed)
    return torch.randn(b, 3, h, w)


def _hooks_left(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def _grad_loop(model, layer, x, post=None):
    """Reference Grad-CAM raw weights (B, K, C) via one backward per class."""
    store = []

    def hook(mod, i, o):
        store.append(o)
        return o.clone()  # keep the recorded tensor intact under later in-place ops

    h = layer.register_forward_hook(hook)
    logits = model(x.detach().requires_grad_())  # a graph even when parameters are frozen
    h.remove()
    ws = [
        torch.autograd.grad(logits[:, k].sum(), store[-1], retain_graph=True)[0]
        for k in range(logits.shape[1])
    ]
    return torch.stack(ws, 1), store[-1].detach()


# ------------------------------------------------------------------------------ API


def test_api_shapes_classes_and_outputs():
    model, x = _resnet(), _x()
    cam = gc.GradCAM(model, [model.layer4])
    res = cam.explain(x, extra_layers=(model.layer2, model.layer3))
    assert res.heatmap.shape == (2, 5, 64, 96) and res.heatmap.dtype == torch.float32
    assert float(res.heatmap.min()) >= 0 and float(res.heatmap.max()) <= 1
    assert torch.equal(res.classes, torch.arange(5))
    with torch.no_grad():
        logits = model(x)
        l2 = model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
        l3 = model.layer3(l2)
        l4 = model.layer4(l3)
    assert torch.allclose(res.logits, logits, atol=1e-5)
    assert torch.allclose(res.activations[0], l4, atol=1e-5)
    assert torch.allclose(res.extra[0], l2, atol=1e-5)
    assert torch.allclose(res.extra[1], l3, atol=1e-5)
    assert res.layer_heatmaps[0].shape == (2, 5, 2, 3)
    for t in [res.heatmap, res.logits, *res.activations, *res.extra, *res.layer_heatmaps]:
        assert not t.requires_grad and t.grad_fn is None

    sub = cam(x, classes=[3, 1])
    assert torch.allclose(sub, res.heatmap[:, [3, 1]], atol=1e-6)
    assert torch.allclose(cam(x, classes=4), res.heatmap[:, [4]], atol=1e-6)
    per_image = torch.tensor([[0, 2], [4, 4]])
    r = cam.explain(x, classes=per_image)
    assert torch.equal(r.classes, per_image)
    assert torch.allclose(r.heatmap[0], res.heatmap[0, [0, 2]], atol=1e-6)
    assert torch.allclose(r.heatmap[1], res.heatmap[1, [4, 4]], atol=1e-6)
    top = cam.explain(x, classes="argmax")
    assert torch.equal(top.classes[:, 0], logits.argmax(1))

    small = cam.explain(x, resize=False)
    assert small.heatmap.shape == (2, 5, 2, 3)
    assert torch.allclose(small.heatmap, small.layer_heatmaps[0], atol=1e-6)
    assert "layer4" in repr(cam)


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_class_chunks_do_not_change_results(method):
    model, x = _resnet(), _x()
    a = method(model, [model.layer3], class_chunk=16)(x)
    b = method(model, [model.layer3], class_chunk=2)(x)
    assert torch.allclose(a, b, atol=1e-5)  # vmap batch size changes rounding only


def test_methods_registry():
    assert gc.get_method("GradCAM++") is gc.GradCAMPlusPlus
    assert gc.get_method("score-cam") is gc.ScoreCAM
    with pytest.raises(CAMError, match="method"):
        gc.get_method("nope")


# ------------------------------------------------------------------------------ closed form


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_closed_form_equals_general_path(method, monkeypatch):
    model, x = _resnet(dropout=True), _x()
    general = method(model, [model.layer4], closed_form=False)(x)

    def no_backward(*a, **k):
        raise AssertionError("closed form must not backpropagate")

    monkeypatch.setattr(gc.GradientCAM, "_batched_grads", no_backward)
    for target in (model.layer4, model.layer4[-1]):
        assert gc.gap_linear_head(model, target) is model.fc[1]
        closed = method(model, [target], closed_form=True)(x)
        assert torch.allclose(closed, general, atol=1e-5), (closed - general).abs().max()
        auto = method(model, [target])(x)
        assert torch.equal(auto, closed)


def test_cam_equals_closed_form_gradcam():
    model, x = _resnet(), _x()
    assert torch.allclose(gc.CAM(model, [model.layer4])(x), gc.GradCAM(model, [model.layer4])(x), atol=1e-5)
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    vgg_like(x)
    with pytest.raises(CAMError, match="global-average-pool"):
        gc.CAM(vgg_like, [vgg_like[0]])(x)


def test_closed_form_needs_eval_mode_dropout():
    model = _resnet(dropout=True)
    model.fc.train()  # active dropout: dS/dA is no longer W / area
    assert gc.gap_linear_head(model, model.layer4) is None
    with pytest.raises(CAMError, match="model.eval"):
        gc.GradCAM(model, [model.layer4], closed_form=True)(_x())


class _Scaled(nn.Module):
    """ResNet-like names but the head sees 2 * GAP: structure matches, numbers do not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.layer4 = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(2 * self.avgpool(self.layer4(self.conv(x))).flatten(1))


def test_closed_form_is_verified_numerically():
    torch.manual_seed(0)
    model, x = _Scaled().eval(), _x()
    assert gc.gap_linear_head(model, model.layer4) is model.fc
    auto = gc.HiResCAM(model, [model.layer4])(x)
    general = gc.HiResCAM(model, [model.layer4], closed_form=False)(x)
    assert torch.equal(auto, general)
    with pytest.raises(CAMError, match="pooled activation"):
        gc.GradCAM(model, [model.layer4], closed_form=True)(x)


# ------------------------------------------------------------------------------ hygiene


@pytest.mark.parametrize("method", [gc.GradCAM, gc.HiResCAM, gc.ScoreCAM, gc.EigenCAM, gc.CAM])
@pytest.mark.parametrize("train", [False, True])
def test_hooks_grads_modes_and_flags_are_left_alone(method, train):
    model, x = _resnet(k=3), _x(b=2, h=32, w=32)
    model.train(train)
    model.layer1.eval()  # mixed modes must survive too
    model.conv1.weight.requires_grad_(False)  # and frozen parameters
    params = list(model.parameters())
    for i, p in enumerate(params[::3]):
        p.grad = torch.full_like(p, float(i))
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in params]
    kw = {"closed_form": False} if issubclass(method, gc.GradientCAM) else {}
    layers = [model.layer4] if method is gc.CAM else [model.layer3, model.layer4]
    if method is gc.ScoreCAM:  # C masked forwards per image: few channels
        kw, layers = {"batch_size": 128}, [model.layer1, model.layer2[0].bn1]
    with method(model, layers, **kw) as cam:
        with torch.no_grad():  # works inside no_grad too
            heat = cam(x)
            assert not torch.is_grad_enabled()
        assert torch.isfinite(heat).all()
    assert torch.is_grad_enabled()
    assert _hooks_left(model) == 0
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in params] == flags
    for p, g in zip(params, grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_hooks_removed_when_the_forward_fails():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3)
            self.b = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            self.b(self.a(x))
            raise RuntimeError("boom")

    m = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        gc.GradCAM(m, [m.a]).explain(_x(), extra_layers=[m.b])
    assert _hooks_left(m) == 0
    assert torch.is_grad_enabled()


def test_inplace_ops_after_the_target_layer():
    """Target bn2 of the last BasicBlock: its output is modified by `out += identity` and an
    in-place ReLU; the map must use the bn2 output and the gradient with respect to it."""
    model, x = _resnet(k=3), _x(b=2, h=64, w=64)
    target = model.layer4[-1].bn2
    g, a = _grad_loop(model, target, x)
    w = g.mean((3, 4))  # (B, K, C)
    raw = torch.einsum("bkc,bchw->bkhw", w, a).clamp_min(0)
    res = gc.GradCAM(model, [target]).explain(x, resize=False)
    assert torch.allclose(res.activations[0], a, atol=1e-6)
    assert (res.activations[0] < 0).any()  # pre-ReLU values kept
    ref = gc.minmax_normalize(raw, 2)
    assert torch.allclose(res.layer_heatmaps[0], ref, atol=1e-5)


def test_frozen_model_and_train_mode_batchnorm_through_vmap():
    model, x = _resnet(k=4), _x(b=3, h=64, w=64)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    g, a = _grad_loop(model, model.layer3, x)  # batch statistics couple the images
    raw = torch.einsum("bkc,bchw->bkhw", g.mean((3, 4)), a).clamp_min(0)
    res = gc.GradCAM(model, [model.layer3]).explain(x, resize=False)
    assert torch.allclose(res.layer_heatmaps[0], gc.minmax_normalize(raw, 2), atol=1e-5)


class _NoVmap(torch.autograd.Function):
    """Identity whose backward calls .item(): impossible under vmap."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * (1.0 if g.abs().sum().item() >= 0 else 0.0)


def test_fallback_when_batched_backward_fails():
    model, x = _resnet(k=4), _x()
    ref = gc.LayerCAM(model, [model.layer3])(x)
    patched = copy.deepcopy(model)
    patched.fc = nn.Sequential(nn.Identity(), patched.fc)
    orig = patched.fc[0].forward
    patched.fc[0].forward = lambda t: _NoVmap.apply(orig(t))
    cam = gc.LayerCAM(patched, [patched.layer3])
    with pytest.warns(RuntimeWarning, match="one backward per class"):
        out = cam(x)
    assert torch.allclose(out, ref, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per CAM object
        assert torch.allclose(cam(x), ref, atol=1e-6)


def test_constant_maps_become_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(0.5)  # constant activations everywhere
    x = _x()
    for method in (*GRAD_METHODS, gc.EigenCAM, gc.ScoreCAM):
        res = method(model, [model[1]]).explain(x)
        assert torch.isfinite(res.heatmap).all()
        assert (res.heatmap == 0).all(), method.__name__


def test_inference_mode_needs_closed_form():
    model, x = _resnet(), _x()
    with torch.inference_mode():
        heat = gc.GradCAM(model, [model.layer4])(x)  # closed form: no graph needed
        assert heat.shape == (2, 5, 64, 96)
        with pytest.raises(CAMError, match="inference_mode"):
            gc.GradCAM(model, [model.layer3])(x)


def _live_tensors() -> int:
    pygc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() on lazy torch modules may warn
        return sum(1 for o in pygc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize(
    "method,kw", [(gc.GradCAM, {"closed_form": False}), (gc.GradCAMPlusPlus, {}), (gc.ScoreCAM, {})]
)
def test_no_memory_growth_over_50_calls(method, kw):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3, width_per_group=64).eval()
    model.layer4 = nn.Sequential(model.layer4[0])  # shallower: cheaper masked forwards
    x = torch.randn(1, 3, 32, 32)
    cam = method(model, [model.layer4], **kw)
    cam.explain(x, extra_layers=[model.layer2])
    before = _live_tensors()
    for _ in range(50 if method is not gc.ScoreCAM else 5):
        res = cam.explain(x, extra_layers=[model.layer2])
    del res
    assert _live_tensors() <= before
    assert _hooks_left(model) == 0


# ------------------------------------------------------------------------------ errors


def test_user_errors_are_value_errors_with_context():
    model, x = _resnet(), _x()
    other = nn.Conv2d(3, 3, 1)
    with pytest.raises(CAMError, match="not a submodule"):
        gc.GradCAM(model, [other])
    with pytest.raises(CAMError, match="target_layers"):
        gc.GradCAM(model, [])
    with pytest.raises(CAMError, match="class_chunk"):
        gc.GradCAM(model, [model.layer4], class_chunk=0)
    with pytest.raises(CAMError, match="closed_form"):
        gc.GradCAM(model, [model.layer4], closed_form="yes")
    with pytest.raises(CAMError, match="scoring"):
        gc.ScoreCAM(model, [model.layer4], scoring="other")
    cam = gc.GradCAM(model, [model.layer4])
    with pytest.raises(CAMError, match=r"x: expected a floating tensor"):
        cam(torch.rand(3, 64))
    with pytest.raises(CAMError, match=r"classes: indices must lie in \[0, 5\)"):
        cam(x, classes=[0, 5])
    with pytest.raises(CAMError, match="classes"):
        cam(x, classes=[0.5])
    with pytest.raises(CAMError, match="classes"):
        cam(x, classes=torch.zeros(3, 1, dtype=torch.long))
    assert issubclass(CAMError, ValueError)

    class Unused(nn.Module):
        def __init__(self, as_tuple):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.skip = nn.Conv2d(3, 2, 3)
            self.as_tuple = as_tuple

        def forward(self, x):
            out = self.conv(x).mean((2, 3))
            return (out, None) if self.as_tuple else out

    m = Unused(as_tuple=True)
    with pytest.raises(CAMError, match="model output"):
        gc.GradCAM(m, [m.conv])(x)
    m = Unused(as_tuple=False)
    with pytest.raises(CAMError, match="was not called"):
        gc.EigenCAM(m, [m.skip])(x)
    with pytest.raises(CAMError, match="extra_layers"):
        gc.EigenCAM(m, [m.conv]).explain(x, extra_layers=[m.skip])


# ------------------------------------------------------------------------------ devices


@pytest.fixture
def _no_tf32():
    # TF32 convolutions (cuDNN's default on Ampere+) change maps by ~1e-3: compare in fp32
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield
    torch.backends.cuda.matmul.allow_tf32 = prev


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_input_device(device, _no_tf32):
    model, x = _resnet(k=3), _x(b=1, h=32, w=48)
    layer = {gc.GradCAM: model.layer4, gc.ScoreCAM: model.layer1}
    ref = {m: m(model, [layer[m]])(x) for m in (gc.GradCAM, gc.ScoreCAM)}
    model, x = model.to(device), x.to(device)
    for m, r in ref.items():
        res = m(model, [layer[m]]).explain(x, extra_layers=[model.layer3])
        for t in [res.heatmap, res.logits, res.classes, *res.activations, *res.extra]:
            assert t.device.type == device
        assert torch.allclose(res.heatmap.cpu(), r, atol=1e-3)
