"""`Boxes`: one flat, batch-friendly set of boxes for a batch of frames (or volumes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .ops import box_area

__all__ = ["Boxes"]


def _as_tensor(x, dtype: torch.dtype, device=None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


@dataclass
class Boxes:
    """Boxes of a batch, as flat tensors plus a frame index (torchvision's ``(K, 5)`` idea).

    Attributes:
        xyxy: ``(M, 4)`` float32 ``x1, y1, x2, y2`` (3D: ``(M, 6)`` ``z1, y1, x1, z2, y2, x2``),
            integral values, **exclusive** end (a one-pixel box at (x, y) is
            ``[x, y, x + 1, y + 1]``), in the heatmap's pixel grid.
        frame: ``(M,)`` int64 row of the batch each box belongs to.
        label: ``(M,)`` int64 class id.
        score: ``(M,)`` float32 confidence (for boxes from heatmaps: mean heat inside the box).

    Boxes made by :func:`gcfeat.boxes.heatmap_to_boxes` are sorted by frame, then label, then
    the coordinates in column order. All four tensors live on one device.

    Example:
        >>> b = Boxes.from_list([{"boxes": [[0, 0, 4, 4]], "labels": [3], "scores": [0.9]}, {}])
        >>> len(b), b.roi_format().tolist()
        (1, [[0.0, 0.0, 0.0, 4.0, 4.0]])
    """

    xyxy: Tensor
    frame: Tensor
    label: Tensor
    score: Tensor

    def __post_init__(self) -> None:
        self.xyxy = _as_tensor(self.xyxy, torch.float32)
        dev = self.xyxy.device
        self.frame = _as_tensor(self.frame, torch.int64, dev)
        self.label = _as_tensor(self.label, torch.int64, dev)
        self.score = _as_tensor(self.score, torch.float32, dev)
        m = self.xyxy.shape[0] if self.xyxy.ndim == 2 else -1
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] not in (4, 6):
            raise ValueError(f"Boxes.xyxy: expected (M, 4) or (M, 6), got {tuple(self.xyxy.shape)}")
        for name in ("frame", "label", "score"):
            t = getattr(self, name)
            if t.shape != (m,):
                raise ValueError(f"Boxes.{name}: expected shape ({m},), got {tuple(t.shape)}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, ndim: int = 2, device: torch.device | str | None = None) -> Boxes:
        """No boxes; ``ndim`` = 2 (``xyxy (0, 4)``) or 3 (``(0, 6)``)."""
        if ndim not in (2, 3):
            raise ValueError(f"Boxes.empty: ndim must be 2 or 3, got {ndim}")
        return cls(
            torch.zeros(0, 2 * ndim, device=device),
            torch.zeros(0, dtype=torch.int64, device=device),
            torch.zeros(0, dtype=torch.int64, device=device),
            torch.zeros(0, device=device),
        )

    @classmethod
    def cat(cls, boxes: Sequence[Boxes]) -> Boxes:
        """Concatenate (frame indices are kept as they are, not offset)."""
        boxes = list(boxes)
        if not boxes:
            raise ValueError("Boxes.cat: expected at least one Boxes, got an empty sequence")
        return cls(*(torch.cat([getattr(b, f) for b in boxes]) for f in ("xyxy", "frame", "label", "score")))

    @classmethod
    def from_list(
        cls, per_frame: Sequence[dict], ndim: int | None = None, device: torch.device | str | None = None
    ) -> Boxes:
        """Inverse of :meth:`to_list`: one dict ``{boxes (n, 2d), labels (n,), scores (n,)}`` per
        frame (arrays, tensors or lists; ``scores`` optional, default 1; empty dicts allowed)."""
        xyxy, frame, label, score = [], [], [], []
        for f, d in enumerate(per_frame):
            b = torch.as_tensor(np.asarray(d.get("boxes", np.zeros((0, 2 * (ndim or 2)))), dtype=np.float32))
            if b.numel() == 0:
                continue
            if b.ndim != 2 or b.shape[1] not in (4, 6):
                raise ValueError(
                    f"Boxes.from_list: frame {f} boxes have shape {tuple(b.shape)}, expected (n, 4) or (n, 6)"
                )
            n = b.shape[0]
            lab = torch.as_tensor(np.asarray(d.get("labels", np.zeros(n)), dtype=np.int64)).reshape(-1)
            sc = d.get("scores")
            sc = (
                torch.ones(n) if sc is None else torch.as_tensor(np.asarray(sc, dtype=np.float32)).reshape(-1)
            )
            if lab.shape[0] != n or sc.shape[0] != n:
                raise ValueError(
                    f"Boxes.from_list: frame {f} has {n} boxes, {lab.shape[0]} labels, {sc.shape[0]} scores"
                )
            xyxy.append(b)
            frame.append(torch.full((n,), f, dtype=torch.int64))
            label.append(lab)
            score.append(sc)
        if not xyxy:
            return cls.empty(ndim or 2, device)
        if ndim is not None and xyxy[0].shape[1] != 2 * ndim:
            raise ValueError(f"Boxes.from_list: ndim={ndim} but boxes have width {xyxy[0].shape[1]}")
        return cls(torch.cat(xyxy), torch.cat(frame), torch.cat(label), torch.cat(score)).to(device or "cpu")

    # -- views --------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Spatial dims of the boxes: 2 or 3."""
        return self.xyxy.shape[1] // 2

    @property
    def device(self) -> torch.device:
        return self.xyxy.device

    def __len__(self) -> int:
        return self.xyxy.shape[0]

    def __getitem__(self, index) -> Boxes:
        """Select boxes by int, slice, index tensor or bool mask ``(M,)``."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif isinstance(index, Tensor) and index.device != self.device:
            index = index.to(self.device)
        return Boxes(self.xyxy[index], self.frame[index], self.label[index], self.score[index])

    def to(self, device: torch.device | str) -> Boxes:
        return Boxes(*(getattr(self, f).to(device) for f in ("xyxy", "frame", "label", "score")))

    def area(self) -> Tensor:
        """``(M,)`` area (3D: volume) in pixels, exclusive end: ``prod(hi - lo)``."""
        return box_area(self.xyxy)

    def roi_format(self) -> Tensor:
        """``(M, 5)`` float ``[frame, x1, y1, x2, y2]``, what ``torchvision.ops.roi_align`` takes
        (3D: ``(M, 7)`` ``[frame, z1, y1, x1, z2, y2, x2]``)."""
        return torch.cat([self.frame[:, None].to(self.xyxy.dtype), self.xyxy], 1)

    def to_list(self, num_frames: int | None = None) -> list[dict[str, Tensor]]:
        """Per-frame dicts ``{"boxes": (n, 2d), "labels": (n,), "scores": (n,)}`` (torchvision's
        detection format); ``num_frames`` defaults to ``max(frame) + 1``; frames without boxes get
        empty tensors. Order within a frame is kept."""
        if num_frames is None:
            num_frames = int(self.frame.max()) + 1 if len(self) else 0
        if len(self) and (int(self.frame.min()) < 0 or int(self.frame.max()) >= num_frames):
            raise ValueError(
                f"Boxes.to_list: frames span [{int(self.frame.min())}, {int(self.frame.max())}], "
                f"num_frames={num_frames}"
            )
        order = torch.argsort(self.frame, stable=True)
        counts = torch.bincount(self.frame, minlength=num_frames).tolist() if len(self) else [0] * num_frames
        parts = [t[order].split(counts) for t in (self.xyxy, self.label, self.score)]
        return [{"boxes": b, "labels": lab, "scores": s} for b, lab, s in zip(*parts)]

    def __repr__(self) -> str:
        return f"Boxes(n={len(self)}, ndim={self.ndim}, device={self.device})"
