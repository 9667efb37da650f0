"""Gradient CAMs of any backbone equal pytorch-grad-cam 1.5.7 with the same reshape_transform
(ConvNeXt, EfficientNet, DenseNet, Swin, ViT / DeiT; torchvision and timm; random init, small
inputs, every class)."""

import functools
import math
import warnings

import numpy as np
import pytest
import torch
import torchvision.models as tvm

import gcfeat.cam as gc
from gcfeat.models.levels import ChannelsLast, TokenGrid, find_levels

K = 3


def _vit():
    m = tvm.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=K
    )
    torch.nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision zero-inits the head
    return m


def _timm(name, **kw):
    timm = pytest.importorskip("timm")
    return lambda: timm.create_model(name, pretrained=False, num_classes=K, **kw)


# family -> (builder, input size, expected level names)
FAMILIES = {
    "convnext_tiny": (
        lambda: tvm.convnext_tiny(num_classes=K),
        64,
        ["features.3", "features.5", "features.7"],
    ),
    "efficientnet_b0": (
        lambda: tvm.efficientnet_b0(num_classes=K),
        64,
        ["features.3", "features.5", "features.8"],
    ),
    "efficientnet_v2_s": (
        lambda: tvm.efficientnet_v2_s(num_classes=K),
        64,
        ["features.3", "features.5", "features.7"],
    ),
    "regnet_x_400mf": (
        lambda: tvm.regnet_x_400mf(num_classes=K),
        64,
        ["trunk_output.block2", "trunk_output.block3", "trunk_output.block4"],
    ),
    "densenet121": (
        lambda: tvm.densenet121(num_classes=K),
        64,
        ["features.denseblock2", "features.denseblock3", "features.norm5"],
    ),
    "mobilenet_v3_small": (
        lambda: tvm.mobilenet_v3_small(num_classes=K),
        64,
        ["features.3", "features.8", "features.12"],
    ),
    "swin_t": (lambda: tvm.swin_t(num_classes=K), 64, ["features.3", "features.5", "features.7"]),
    "vit": (_vit, 32, ["encoder.layers.encoder_layer_1.ln_1"]),
    "timm_convnext_atto": (_timm("convnext_atto"), 64, ["stages.1", "stages.2", "stages.3"]),
    "timm_deit_tiny_distilled": (
        _timm("deit_tiny_distilled_patch16_224", img_size=64, depth=2),
        64,
        ["blocks.1.norm1"],
    ),
    "timm_swin_tiny": (
        _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=2, depths=(1, 1, 1, 1)),
        64,
        ["layers.1", "layers.2", "layers.3"],
    ),
}


@functools.cache  # built once per file: nothing here changes a model
def _build(name):
    builder, size, names = FAMILIES[name]
    torch.manual_seed(0)
    return builder().eval(), size, names


# --------------------------------------------------------------------------------------------
# equal to pytorch-grad-cam with the same reshape_transform


def _pgc_reshape(level):
    if isinstance(level.reshape, TokenGrid):
        p = level.reshape.prefix_tokens

        def vit(t):  # pytorch-grad-cam's ViT tutorial transform
            side = math.isqrt(t.shape[1] - p)
            r = t[:, p:, :].reshape(t.size(0), side, side, t.size(2))
            return r.transpose(2, 3).transpose(1, 2)

        return vit
    if isinstance(level.reshape, ChannelsLast):
        return lambda t: t.permute(0, 3, 1, 2)
    return None


#: pytorch-grad-cam stores a CPU activation without copying it, and torchvision's DenseNet
#: applies an in-place ReLU to ``features.norm5``'s output right after the hook: its stored
#: activation becomes relu(norm5) afterwards (gcfeat records a copy). Compared one block up.
PGC_LEVEL = {"densenet121": "features.denseblock4"}
#: Swin's last stage feeds a LayerNorm, whose gradient is orthogonal to its input per token:
#: HiResCAM's per-position sum_c g * a is rounding noise (~1e-6 from terms ~1e-2) in both
#: libraries, so the two noises are not compared.
NOISE = {("HiResCAM", "swin_t"), ("HiResCAM", "timm_swin_tiny")}
#: every family with Grad-CAM and Grad-CAM++; the other methods (the same gradients, another
#: reduction) on one CNN and the token models
CASES = [
    (m, f)
    for m in ["GradCAM", "GradCAMPlusPlus"]
    for f in [
        "convnext_tiny",
        "efficientnet_b0",
        "densenet121",
        "swin_t",
        "vit",
        "timm_deit_tiny_distilled",
        "timm_swin_tiny",
    ]
] + [
    (m, f)
    for m in ["XGradCAM", "HiResCAM", "LayerCAM"]
    for f in ["convnext_tiny", "vit", "timm_deit_tiny_distilled", "timm_swin_tiny"]
    if (m, f) not in NOISE
]


@pytest.mark.parametrize("method,family", CASES)
def test_gradient_cams_equal_pytorch_grad_cam(family, method, one_thread):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, size, _ = _build(family)
    level = find_levels(model, [PGC_LEVEL[family]] if family in PGC_LEVEL else None)[-1]
    torch.manual_seed(2)
    x = torch.randn(2, 3, size, size)
    ours = getattr(gc, method)(model, [level.module])(x)  # (2, K, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(pgc, method)(model, [level.module], reshape_transform=_pgc_reshape(level))
        for k in range(K):
            want = ref(input_tensor=x, targets=[ClassifierOutputTarget(k)] * 2)
            np.testing.assert_allclose(ours[:, k].numpy(), want, atol=1e-4)
