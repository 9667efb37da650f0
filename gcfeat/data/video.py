"""Frame-accurate video reading with OpenCV (FFmpeg backend).

Frames are found by decoding sequentially and ``grab()``-bing past the ones not wanted, never by
``CAP_PROP_POS_FRAMES`` seeking (which lands on key frames for many codecs). Wanted frames are
decoded with ``retrieve()`` only. Problems raise :class:`~gcfeat.data.errors.DataError` naming
the file: missing, empty, not openable (corrupt, truncated, unsupported codec), no decodable
frames, or fewer frames than asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from .errors import DataError, require_file


def open_video(path: os.PathLike | str) -> cv2.VideoCapture:
    """Open a video for reading; raise :class:`DataError` if it is missing, empty or unreadable."""
    require_file(path, "a video file")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise DataError(
            f"{path}: cannot be opened as a video ({os.path.getsize(path)} bytes; "
            f"corrupt, truncated or an unsupported codec)"
        )
    return cap


def video_info(path: os.PathLike | str) -> dict:
    """``{"frames": n, "fps": f, "size": (H, W)}`` from the container (frames may be 0 if unknown)."""
    cap = open_video(path)
    try:
        return {
            "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
            "size": (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))),
        }
    finally:
        cap.release()


def iter_frames(path: os.PathLike | str, frame_indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, uint8 RGB (H, W, 3))`` for the wanted frames in increasing order.

    Decodes sequentially from the start; each wanted frame is yielded once even if listed twice.
    """
    wanted = sorted(set(int(i) for i in frame_indices))
    if wanted and wanted[0] < 0:
        raise ValueError(f"frame_indices: negative frame {wanted[0]} for {path}")
    if not wanted:
        return
    cap = open_video(path)
    try:
        pos = 0  # index of the next frame grab() returns
        for target in wanted:
            while pos <= target:
                if not cap.grab():
                    what = "no decodable frames" if pos == 0 else f"only {pos} decodable frames"
                    raise DataError(
                        f"{path}: {what}; frame {target} was asked for "
                        f"(truncated or corrupt video, or the annotation claims "
                        f"more frames than the video has)"
                    )
                pos += 1
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                raise DataError(f"{path}: frame {target} could not be decoded (corrupt video)")
            yield target, np.ascontiguousarray(frame[..., ::-1])
    finally:
        cap.release()


def read_frames(path: os.PathLike | str, frame_indices: Iterable[int]) -> np.ndarray:
    """Decode the given frames of a video, frame-accurately: uint8 RGB ``(N, H, W, 3)``.

    ``frame_indices`` may be in any order and repeat; the result follows that order.

    >>> frames = read_frames("videos/video01.mp4", [0, 25, 50])   # doctest: +SKIP
    """
    frame_indices = [int(i) for i in frame_indices]
    decoded = dict(iter_frames(path, frame_indices))
    if not frame_indices:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([decoded[i] for i in frame_indices])
