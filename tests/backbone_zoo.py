"""One small model per backbone family (random init, 32-64 px inputs), torchvision and timm:
the models tests/cam/test_backbones.py and test_backbones_pgc.py run on."""

import functools

import pytest
import torch
import torchvision.models as tvm

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
def build(name):
    builder, size, names = FAMILIES[name]
    torch.manual_seed(0)
    return builder().eval(), size, names
