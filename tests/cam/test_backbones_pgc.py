"""Gradient CAMs of any backbone equal pytorch-grad-cam 1.5.7 with the same reshape_transform
(ConvNeXt, EfficientNet, DenseNet, Swin, ViT / DeiT; torchvision and timm; random init, small
inputs, every class)."""

import math
import warnings

import numpy as np
import pytest
import torch
from backbone_zoo import K
from backbone_zoo import build as _build

import gcfeat.cam as gc
from gcfeat.models.levels import ChannelsLast, TokenGrid, find_levels

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
