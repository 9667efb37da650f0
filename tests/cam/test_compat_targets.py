"""gcfeat.cam.compat against pytorch-grad-cam 1.5.7: target callables, a target per image,
aug_smooth, eigen_smooth, reshape_transform; the engine's fast path for plain targets."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import gcfeat.cam as gc
import gcfeat.cam.compat as compat
from gcfeat.cam.smooth import Augmentation

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import model_targets as mt  # noqa: E402

METHODS = ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM"]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)


def _pgc(name, model, layers, x, targets, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with getattr(pgc, name)(model=model, target_layers=layers) as cam:
            return cam(input_tensor=x, targets=targets, **kw)


def _ours(name, model, layers, x, targets, **kw):
    with getattr(compat, name)(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=targets, **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: [mt.ClassifierOutputSoftmaxTarget(1), mt.ClassifierOutputSoftmaxTarget(3)],
        lambda: [compat.ClassifierOutputSoftmaxTarget(1), compat.ClassifierOutputSoftmaxTarget(3)],
        lambda: [mt.ClassifierOutputTarget(4), mt.ClassifierOutputSoftmaxTarget(0)],  # per image
        lambda: [lambda o: o[2] - o[0], lambda o: o[1:3].sum()],  # lambdas
    ],
    ids=["pgc-softmax", "softmax", "mixed", "lambda"],
)
@pytest.mark.parametrize("method", METHODS)
def test_callable_targets_equal_pgc(resnet, x, make, method, one_thread):
    want = _pgc(method, resnet, [resnet.layer4], x, make())
    got = _ours(method, resnet, [resnet.layer4], x, make())
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_softmax_target_is_not_the_logit_map(resnet, x):
    """The bug: a ``category`` attribute was read as a raw-logit target."""
    soft = _ours("GradCAM", resnet, [resnet.layer4], x, [mt.ClassifierOutputSoftmaxTarget(1)] * 2)
    logit = _ours("GradCAM", resnet, [resnet.layer4], x, [mt.ClassifierOutputTarget(1)] * 2)
    assert np.abs(soft - logit).max() > 0.05


def test_plain_targets_take_the_class_path(resnet, x, monkeypatch):
    """Plain ClassifierOutputTarget lists (gcfeat's or pytorch-grad-cam's) are class indices:
    closed form, no backward; a subclass is a callable (it may override __call__)."""
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    cam = gc.GradCAM(resnet, [resnet.layer4])
    res = cam.explain(x, targets=[mt.ClassifierOutputTarget(2), compat.ClassifierOutputTarget(4)])
    assert res.classes.tolist() == [[2], [4]] and not calls
    torch.testing.assert_close(res.heatmap[:, 0], torch.stack([cam(x, 2)[0, 0], cam(x, 4)[1, 0]]))

    class Doubled(mt.ClassifierOutputTarget):
        def __call__(self, out):
            return 2 * super().__call__(out)

    res = cam.explain(x, targets=[Doubled(2), Doubled(4)])
    assert res.classes is None and calls


def test_one_output_targets_equal_pgc(x, one_thread):
    """Binary and raw-score targets (pytorch-grad-cam sums target outputs into one loss, which
    must then be a single value: a one-output model)."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=1).eval()
    for targets in (
        [mt.BinaryClassifierOutputTarget(0)] * 2,
        [mt.BinaryClassifierOutputTarget(1), compat.BinaryClassifierOutputTarget(0)],
        [mt.RawScoresOutputTarget(), compat.RawScoresOutputTarget()],
    ):
        np.testing.assert_allclose(
            _ours("GradCAM", model, [model.layer4], x, targets),
            _pgc("GradCAM", model, [model.layer4], x, targets),
            atol=1e-5,
        )


class _TinySeg(nn.Module):
    """(B, 3, H, W) -> (B, 4, H, W) class scores."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return nn.functional.interpolate(
            self.head(self.body(x)), size=x.shape[2:], mode="bilinear", align_corners=False
        )


def test_semantic_segmentation_target_equals_pgc(x, one_thread):
    torch.manual_seed(4)
    model = _TinySeg().eval()
    mask = np.zeros((64, 64), np.float32)
    mask[10:30, 20:50] = 1
    targets = [mt.SemanticSegmentationTarget(2, mask), compat.SemanticSegmentationTarget(1, mask)]
    np.testing.assert_allclose(
        _ours("GradCAM", model, [model.body], x, targets),
        _pgc("GradCAM", model, [model.body], x, targets),
        atol=1e-5,
    )


@pytest.mark.parametrize("method", ["GradCAM", "HiResCAM", "EigenCAM"])
def test_aug_smooth_equals_pgc(resnet, x, method, one_thread):
    """Both libraries use the same six augmentations (pytorch-grad-cam's default ttach set and
    gcfeat's DEFAULT_AUGMENTATIONS: flip off / on x brightness 0.9 / 1 / 1.1)."""
    for targets in (None, [mt.ClassifierOutputTarget(3)] * 2):
        want = _pgc(method, resnet, [resnet.layer4], x, targets, aug_smooth=True)
        got = _ours(method, resnet, [resnet.layer4], x, targets, aug_smooth=True)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_aug_smooth_accepts_ttach_transforms(resnet, x):
    tta = pytest.importorskip("ttach")
    transforms = tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.8, 1.2])])
    targets = [mt.ClassifierOutputTarget(1)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pgc.GradCAM(model=resnet, target_layers=[resnet.layer4])
        ref.tta_transforms = transforms  # BaseCAM's option; GradCAM does not pass it on
        want = ref(x, targets, aug_smooth=True)
    got = compat.GradCAM(model=resnet, target_layers=[resnet.layer4], tta_transforms=transforms)(
        x, targets, aug_smooth=True
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def _signed_projection(activation_batch):
    """pytorch-grad-cam's get_2d_projection with gcfeat's sign rule (sum of v1 >= 0): the SVD
    sign is arbitrary, everything else is its code."""
    out = []
    for a in np.nan_to_num(activation_batch.copy()):
        m = a.reshape(a.shape[0], -1).T
        m = m - m.mean(axis=0)
        v = np.linalg.svd(m, full_matrices=True)[2][0]
        v = -v if v.sum() < 0 else v
        out.append((m @ v).reshape(a.shape[1:]))
    return np.float32(out)


@pytest.mark.parametrize("method", METHODS + ["ScoreCAM"])
def test_eigen_smooth_equals_pgc(resnet, x, method, monkeypatch, one_thread):
    import pytorch_grad_cam.base_cam as base
    import pytorch_grad_cam.hirescam as hires
    import pytorch_grad_cam.layer_cam as layer

    for mod in (base, hires, layer):
        monkeypatch.setattr(mod, "get_2d_projection", _signed_projection)
    model, x = (resnet, x) if method != "ScoreCAM" else (resnet, x[:1, :, :32, :32])
    targets = [mt.ClassifierOutputTarget(2)] * len(x)
    want = _pgc(method, model, [model.layer4], x, targets, eigen_smooth=True)
    got = _ours(method, model, [model.layer4], x, targets, eigen_smooth=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_engine_smoothing_options(resnet, x):
    cam = gc.GradCAM(resnet, [resnet.layer4])
    plain = cam.explain(x)
    smooth = cam.explain(x, aug_smooth=True)
    assert smooth.heatmap.shape == plain.heatmap.shape
    torch.testing.assert_close(smooth.logits, plain.logits)  # the un-augmented pass
    assert not torch.allclose(smooth.heatmap, plain.heatmap)
    one = Augmentation()
    torch.testing.assert_close(cam.explain(x, aug_smooth=True, augmentations=[one]).heatmap, plain.heatmap)
    eig = cam.explain(x, eigen_smooth=True)
    assert eig.heatmap.shape == plain.heatmap.shape and not torch.allclose(eig.heatmap, plain.heatmap)


def test_reshape_transform_given_by_the_user(one_thread):
    """A token model gcfeat does not know: the user's transform, as in pytorch-grad-cam."""
    torch.manual_seed(5)

    class Tokens(nn.Module):  # conv stem -> (B, N, C) tokens -> mean -> linear
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 8, stride=8)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = self.mix(self.stem(x).flatten(2).transpose(1, 2)).relu()
            return self.head(t.mean(1))

    model = Tokens().eval()
    xx = torch.randn(2, 3, 32, 32)
    rt = lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 4)  # noqa: E731
    targets = [mt.ClassifierOutputTarget(1)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pgc.GradCAM(model=model, target_layers=[model.mix], reshape_transform=rt)(xx, targets)
    got = compat.GradCAM(model=model, target_layers=[model.mix], reshape_transform=rt)(xx, targets)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(gc.CAMError, match="reshape_transform"):
        gc.GradCAM(model, [model.mix], reshape_transform=None)(xx)


def test_closed_form_only_for_logit_targets_without_reshape(resnet, x, one_thread):
    """The closed form (dS/dA = W / area, no backward) holds for raw logits of a GAP -> linear
    head on the raw activation: never with a reshape transform or another target."""
    plain = gc.GradCAM(resnet, [resnet.layer4])
    assert plain._plan().closed_form
    swapped = gc.GradCAM(resnet, [resnet.layer4], reshape_transform=lambda t: t.flip(-1))
    assert not swapped._plan().closed_form
    general = gc.GradCAM(resnet, [resnet.layer4], closed_form=False)
    torch.testing.assert_close(swapped(x), general(x).flip(-1), atol=1e-5, rtol=1e-5)
    soft = [mt.ClassifierOutputSoftmaxTarget(2)] * 2
    assert not plain._plan(score=soft).closed_form
    with pytest.raises(gc.CAMError, match="closed_form=True"):
        gc.GradCAM(resnet, [resnet.layer4], closed_form=True, reshape_transform=lambda t: t).explain(x)
    for model in (
        torchvision.models.swin_t(num_classes=3),
        torchvision.models.vit_b_16(image_size=32, num_classes=3),
    ):
        layer = [m for m in model.modules() if isinstance(m, nn.LayerNorm)][-2]
        assert not gc.GradCAM(model.eval(), [layer])._plan().closed_form
