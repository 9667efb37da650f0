"""3D ResNets for volumes ``(B, C, D, H, W)``, with torchvision's layout and names.

The module names match torchvision's 2D ResNet (``conv1, bn1, relu, maxpool, layer1..layer4,
avgpool, fc``), so everything written for a 2D ResNet (target ``model.layer4``, ROI features
from ``layer2/3``, Grad-CAM's closed form for the GAP -> linear head) works unchanged.

``small_input=True`` (default) replaces the ImageNet stem (7x7x7 stride-2 conv + max-pool,
a 4x reduction) by a 3x3x3 stride-1 conv without pooling, for MedMNIST-sized volumes: a 28^3
volume keeps 28^3 in ``layer1`` and ends at 4^3 in ``layer4`` (64^3 -> 8^3), instead of 1^3.

>>> model = resnet3d_18(num_classes=11, in_channels=1)
>>> model(torch.rand(2, 1, 28, 28, 28)).shape
torch.Size([2, 11])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["BasicBlock3d", "ResNet3d", "resnet3d_10", "resnet3d_18", "resnet3d_34"]


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with batch norm and an identity (or 1x1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet3d(nn.Module):
    """ResNet over ``(B, in_channels, D, H, W)`` -> logits ``(B, num_classes)``.

    Args:
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of ``fc``.
        in_channels: input channels (1 for CT / MRI volumes).
        small_input: 3x3x3 stride-1 stem without max-pool (for 28^3 / 64^3 volumes); False
            gives the ImageNet-style 7x7x7 stride-2 stem with max-pool.
        widths: channels of ``layer1..layer4`` (torchvision: 64, 128, 256, 512; smaller
            widths make fast test models).
        dropout: if > 0, ``fc = Sequential(Dropout(dropout), Linear)`` as in
            :func:`gcfeat.models.build_classifier`.
        zero_init_residual: zero the last BN of each block (torchvision's option).
    """

    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int,
        in_channels: int = 1,
        *,
        small_input: bool = True,
        widths: Sequence[int] = (64, 128, 256, 512),
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(
                f"ResNet3d: layers and widths need 4 stages, found layers="
                f"{tuple(layers)} widths={tuple(widths)}"
            )
        if num_classes < 1 or in_channels < 1:
            raise ValueError(
                f"ResNet3d: num_classes and in_channels must be >= 1, found {num_classes} and {in_channels}"
            )
        self.inplanes = widths[0]
        k, s = (3, 1) if small_input else (7, 2)
        self.conv1 = nn.Conv3d(in_channels, widths[0], k, stride=s, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        linear = nn.Linear(widths[3] * BasicBlock3d.expansion, num_classes)
        self.fc = nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock3d):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm3d(planes),
            )
        mods = [BasicBlock3d(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        mods += [BasicBlock3d(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C_in, D, H, W)`` -> ``layer4`` output ``(B, widths[3], d, h, w)``."""
        if x.ndim != 5:
            raise ValueError(f"ResNet3d: expected input (B, C, D, H, W), found shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def resnet3d_10(num_classes: int, in_channels: int = 1, **kwargs) -> ResNet3d:
    """ResNet-10 3D (one block per stage); ``kwargs`` go to :class:`ResNet3d`."""
    return ResNet3d((1, 1, 1, 1), num_classes, in_channels, **kwargs)


def resnet3d_18(num_classes: int, in_channels: int = 1, **kwargs) -> ResNet3d:
    """ResNet-18 3D (two blocks per stage); ``kwargs`` go to :class:`ResNet3d`."""
    return ResNet3d((2, 2, 2, 2), num_classes, in_channels, **kwargs)


def resnet3d_34(num_classes: int, in_channels: int = 1, **kwargs) -> ResNet3d:
    """ResNet-34 3D (3, 4, 6, 3 blocks); ``kwargs`` go to :class:`ResNet3d`."""
    return ResNet3d((3, 4, 6, 3), num_classes, in_channels, **kwargs)
