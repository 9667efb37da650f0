"""gcfeat.cam against pytorch-grad-cam 1.5.7 (test-only dependency) on random torchvision models.

pytorch-grad-cam explains one class per image per call; to get every class we feed K copies of
each image with targets ``ClassifierOutputTarget(0..K-1)`` (images are independent in eval
mode). Its forward + full backward is the expensive part, so per model we run it once through
its GradCAM object and let the other method objects (GradCAM++, XGradCAM, HiResCAM, LayerCAM)
post-process the same recorded activations and gradients with their own code
(``compute_cam_per_layer`` + ``aggregate_multi_layers``, exactly what their ``forward`` does
after the backward). ``test_each_pgc_call_on_resnet18`` also calls every method end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import gcfeat.cam as gc
import gcfeat.cam.compat as compat

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

GRAD_METHODS = ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM"]
TOL = 1e-4


# one OpenMP thread: CAM tests run many small ops, which extra threads only slow down
pytestmark = pytest.mark.usefixtures("one_thread")


def _pgc_every_class(model, layers, x, methods=GRAD_METHODS):
    """pytorch-grad-cam maps of every class: {method: (B, K, *spatial)} numpy."""
    with torch.no_grad():
        K = model(x[:1]).shape[1]
    B = x.shape[0]
    xr = x.repeat_interleave(K, 0)
    targets = [ClassifierOutputTarget(k) for _ in range(B) for k in range(K)]
    out = {}
    with pgc.GradCAM(model=model, target_layers=layers) as first:
        out["GradCAM"] = first(input_tensor=xr, targets=targets)
        shared = first.activations_and_grads
        for name in methods:
            if name == "GradCAM":
                continue
            with getattr(pgc, name)(model=model, target_layers=layers) as other:
                other.activations_and_grads.release()
                other.activations_and_grads = shared
                per_layer = other.compute_cam_per_layer(xr, targets, False)
                out[name] = other.aggregate_multi_layers(per_layer)
                other.activations_and_grads = first.activations_and_grads.__class__(
                    model, [], None
                )  # keep `shared` alive for the next method
    return {k: v.reshape(B, K, *x.shape[2:]) for k, v in out.items()}


def _check_all(model, layers, x, closed_forms=("auto", False), general_for=GRAD_METHODS):
    """Every method with ``closed_form="auto"``; the general path for ``general_for``."""
    model.eval()
    ref = _pgc_every_class(model, layers, x)
    for name in GRAD_METHODS:
        for cf in closed_forms if name in general_for else closed_forms[:1]:
            heat = getattr(gc, name)(model, layers, closed_form=cf)(x)
            assert heat.dtype == torch.float32 and heat.shape == ref[name].shape
            diff = (heat - torch.from_numpy(ref[name])).abs().max().item()
            assert diff <= TOL, (name, cf, diff)


def test_resnet18_every_class_every_method():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    x = torch.randn(2, 3, 224, 256)  # non-square: layer4 is 7x8
    _check_all(model, [model.layer4], x)


def test_resnet18_last_block_and_two_layers():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 128, 160)
    _check_all(model, [model.layer4[-1]], x, general_for=("GradCAM",))
    _check_all(model, [model.layer3, model.layer4], x, closed_forms=("auto",))


def test_each_pgc_call_on_resnet18():
    """End-to-end pytorch-grad-cam calls (no shared recording), one class per call."""
    torch.manual_seed(2)
    model = torchvision.models.resnet18(num_classes=2).eval()
    x = torch.randn(1, 3, 96, 128)
    for name in GRAD_METHODS:
        heat = getattr(gc, name)(model, [model.layer4])(x)
        for k in range(2):
            with getattr(pgc, name)(model=model, target_layers=[model.layer4]) as cam:
                ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])
            assert np.abs(heat[:, k].numpy() - ref).max() <= TOL, (name, k)


@pytest.mark.slow
def test_vgg11_bn_every_class_every_method():
    torch.manual_seed(3)
    model = torchvision.models.vgg11_bn(num_classes=3).eval()
    x = torch.randn(1, 3, 224, 224)
    # no GAP -> linear head: gcfeat must take the general (backward) path
    assert gc.gap_linear_head(model, model.features[-1]) is None
    _check_all(model, [model.features[-1]], x, closed_forms=("auto",))
    _check_eigen(model, model.features[-1], x)


@pytest.mark.slow
def test_resnet50_11_classes_every_method():
    torch.manual_seed(4)
    model = torchvision.models.resnet50(num_classes=11).eval()
    x = torch.randn(1, 3, 224, 224)
    _check_all(model, [model.layer4], x, general_for=("GradCAM", "HiResCAM"))


def _eigen_pgc(acts: np.ndarray, size, sign: float) -> np.ndarray:
    """pytorch-grad-cam's EigenCAM post-processing on a given projection sign."""
    cam = np.maximum(sign * get_2d_projection(acts), 0)
    return scale_cam_image(scale_cam_image(cam, size[::-1]))


def _check_eigen(model, target, x):
    res = gc.EigenCAM(model, [target]).explain(x, classes=[0, 2])
    with pgc.EigenCAM(model=model, target_layers=[target]) as cam:
        ref = cam(input_tensor=x, targets=None)
    acts = res.activations[0].numpy()
    flipped = _eigen_pgc(acts, x.shape[2:], -1.0)
    assert np.abs(_eigen_pgc(acts, x.shape[2:], 1.0) - ref).max() <= 1e-5  # helper = pgc
    for b in range(x.shape[0]):
        ours = res.heatmap[b, 0].numpy()
        assert np.array_equal(ours, res.heatmap[b, 1].numpy())  # class independent
        d = min(np.abs(ours - ref[b]).max(), np.abs(ours - flipped[b]).max())
        assert d <= TOL, d


def test_eigencam_matches_up_to_sign():
    torch.manual_seed(5)
    model = torchvision.models.resnet18(num_classes=3).eval()
    _check_eigen(model, model.layer4, torch.randn(2, 3, 224, 224))


def test_compat_gradcam_is_a_drop_in():
    torch.manual_seed(6)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(3, 3, 96, 128)
    cats = [4, 0, 4]
    for name in ["GradCAM", "LayerCAM"]:
        with getattr(pgc, name)(model=model, target_layers=[model.layer4]) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in cats])
            ref_top = cam(input_tensor=x, targets=None)
        with getattr(compat, name)(model=model, target_layers=[model.layer4]) as cam:
            ours = cam(input_tensor=x, targets=[compat.ClassifierOutputTarget(k) for k in cats])
            ours_pgc_targets = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in cats])
            ours_top = cam(input_tensor=x, targets=None)
        assert isinstance(ours, np.ndarray) and ours.shape == (3, 96, 128)
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).max() <= TOL
        assert np.array_equal(ours, ours_pgc_targets)
        assert np.abs(ours_top - ref_top).max() <= TOL


class _TinyNet(torch.nn.Module):
    """A small GAP -> linear CNN, cheap enough for Score-CAM's C forwards per image."""

    def __init__(self, k=4, c=6):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(8, c, 3, 2, 1),
            torch.nn.ReLU(inplace=True),
        )
        self.head = torch.nn.Linear(c, k)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_compat_scorecam_matches_pgc_scorecam():
    torch.manual_seed(7)
    model = _TinyNet().eval()
    x = torch.randn(2, 3, 64, 80)
    cats = [1, 3]
    with pgc.ScoreCAM(model=model, target_layers=[model.features]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in cats])
    with compat.ScoreCAM(model=model, target_layers=[model.features]) as cam:
        ours = cam(input_tensor=x, targets=[compat.ClassifierOutputTarget(k) for k in cats])
    assert np.abs(ours - ref).max() <= TOL
