"""Small CNNs of the Alzheimer MRI seed (facts §4): ``BaselineCNN`` and its variants.

``BaselineCNN`` is exactly the seed's baseline on ``(B, 1, 128, 128)`` input::

    conv1 Conv(1->32, 3) -> ReLU -> MaxPool(2) -> bn1 BN(32) -> conv2 Conv(32->64, 3) -> ReLU
    -> MaxPool(2) -> flatten (64*30*30) -> fc1 Linear(->128) -> fc2 Linear(128->4)

(no activation between ``fc1`` and ``fc2``, as in the seed). The variants (``SMALL_CNNS``):

* ``baseline_cnn_dropout`` (seed ``BaselineCNN_CE``): Dropout(0.5) after each conv block and
  before ``fc2``;
* ``baseline_cnn_drop01`` (``BaselineCNN_CE_Drop01``): the same with p = 0.1;
* ``baseline_cnn_convadd`` (``BaselineCNN_CE_ConvAdd``): an extra block ``conv3 Conv(64->128, 3)
  -> ReLU -> MaxPool(2)`` and Dropout(0.5);
* ``baseline_cnn_convadd_nodrop`` (``BaselineCNN_CE_ConvAdded_DropMinus``): extra conv, no dropout.

Grad-CAM targets the last conv (``model.last_conv``: ``conv2``, or ``conv3`` with the extra
block), as the seed did.

Example::

    >>> model = build_small_cnn("baseline_cnn", num_classes=4)
    >>> model(torch.zeros(2, 1, 128, 128)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BaselineCNN", "SMALL_CNNS", "build_small_cnn"]


class BaselineCNN(nn.Module):
    """The seed's baseline CNN with optional dropout and an optional third conv block.

    Args:
        num_classes: outputs of ``fc2`` (4).
        in_channels: input channels (1, grayscale).
        input_size: ``(H, W)`` or an int; sets ``fc1``'s input width (128 -> 64*30*30).
        dropout: p of the Dropout layers (0 = none, the baseline).
        extra_conv: add ``conv3`` (64 -> 128) + ReLU + MaxPool after the second block.
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 1,
        input_size=128,
        dropout: float = 0.0,
        extra_conv: bool = False,
    ):
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3) if extra_conv else None
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        for _ in range(3 if extra_conv else 2):  # conv 3x3 (valid) then pool 2
            h, w = (h - 2) // 2, (w - 2) // 2
        if h < 1 or w < 1:
            raise ValueError(f"input_size {input_size} is too small for BaselineCNN")
        out_ch = 128 if extra_conv else 64
        self.fc1 = nn.Linear(out_ch * h * w, 128)
        self.fc2 = nn.Linear(128, num_classes)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The Grad-CAM target: the last convolution."""
        return self.conv3 if self.conv3 is not None else self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_classes)`` logits."""
        x = self.bn1(self.pool(self.relu(self.conv1(x))))
        x = self.drop(self.pool(self.relu(self.conv2(x))))
        if self.conv3 is not None:
            x = self.drop(self.pool(self.relu(self.conv3(x))))
        x = self.fc1(x.flatten(1))
        return self.fc2(self.drop(x))


#: name -> keyword arguments of BaselineCNN.
SMALL_CNNS: dict[str, dict] = {
    "baseline_cnn": {},
    "baseline_cnn_dropout": {"dropout": 0.5},
    "baseline_cnn_drop01": {"dropout": 0.1},
    "baseline_cnn_convadd": {"dropout": 0.5, "extra_conv": True},
    "baseline_cnn_convadd_nodrop": {"extra_conv": True},
}


def build_small_cnn(
    arch: str = "baseline_cnn",
    num_classes: int = 4,
    in_channels: int = 1,
    input_size=128,
    dropout: float | None = None,
) -> BaselineCNN:
    """A named variant from ``SMALL_CNNS``; ``dropout`` overrides the variant's rate."""
    if arch not in SMALL_CNNS:
        raise ValueError(f"unknown small CNN {arch!r}; expected one of {sorted(SMALL_CNNS)}")
    kw = dict(SMALL_CNNS[arch])
    if dropout is not None:
        kw["dropout"] = dropout
    return BaselineCNN(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw)
