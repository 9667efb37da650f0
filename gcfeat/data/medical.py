"""Medical volume I/O: NIfTI (through nibabel, the affine kept) and MetaImage `.mha` (our own).

Array order. NIfTI arrays are kept in nibabel's voxel order ``(i, j, k)`` (usually x, y, z);
``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres. MetaImage stores the first index fastest,
so a C-order numpy array ``(D, H, W)`` (z, y, x) is written with ``DimSize = W H D``; this module's
``write_mha`` / ``read_mha`` take and return ``(D, H, W)`` arrays (the torch order of a volume).

MetaImage (``.mha``, "local" data) is a text header of ``Key = Value`` lines ending with
``ElementDataFile = LOCAL``, followed directly by the raw little-endian voxels::

    ObjectType = Image
    NDims = 3
    BinaryData = True
    BinaryDataByteOrderMSB = False
    CompressedData = False
    TransformMatrix = 1 0 0 0 1 0 0 0 1     # direction cosines, row-major (ITK: LPS world)
    Offset = 0 0 0                          # world position of voxel (0, 0, 0)
    ElementSpacing = 1 1 1                  # x y z
    DimSize = W H D                         # x y z
    ElementType = MET_FLOAT
    ElementDataFile = LOCAL

``nifti_to_mha_geometry(affine)`` converts a NIfTI (RAS) affine to ITK's LPS spacing / origin /
direction, so a CAM exported next to its image lines up in ITK-SNAP, 3D Slicer or MeVisLab.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gcfeat.errors import GcfeatError

__all__ = [
    "MedicalIOError",
    "save_nifti",
    "load_nifti",
    "write_mha",
    "read_mha",
    "nifti_to_mha_geometry",
    "save_mha_like_nifti",
]


class MedicalIOError(GcfeatError):
    """A medical image file is missing, truncated or not in the expected format."""


# --------------------------------------------------------------------------------------- NIfTI
def save_nifti(path: str | os.PathLike, volume, affine=None) -> Path:
    """Write ``volume`` (array or tensor, nibabel voxel order) as NIfTI with ``affine`` (4, 4).

    ``affine=None`` writes the identity. The dtype is kept (float64 becomes float32, bool uint8).
    """
    import nibabel as nib

    arr = _to_numpy(volume)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise MedicalIOError(f"save_nifti({path}): affine has shape {aff.shape}, expected (4, 4)")
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def load_nifti(path: str | os.PathLike, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file -> ``(array in voxel order, affine (4, 4) float64)``.

    A missing, truncated or corrupt file raises ``MedicalIOError`` naming the file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise MedicalIOError(f"NIfTI file {path} does not exist")
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)  # reads (and decompresses) every voxel now
    except Exception as exc:  # nibabel raises many types for broken files (EOFError, zlib, ...)
        raise MedicalIOError(
            f"cannot read NIfTI file {path}: {type(exc).__name__}: {exc} "
            "(expected a complete .nii / .nii.gz file; is it truncated?)"
        ) from exc
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr, np.asarray(img.affine, dtype=np.float64)


# ------------------------------------------------------------------------------------ MetaImage
_MET_TYPES = {
    np.dtype(np.uint8): "MET_UCHAR",
    np.dtype(np.int8): "MET_CHAR",
    np.dtype(np.uint16): "MET_USHORT",
    np.dtype(np.int16): "MET_SHORT",
    np.dtype(np.uint32): "MET_UINT",
    np.dtype(np.int32): "MET_INT",
    np.dtype(np.float32): "MET_FLOAT",
    np.dtype(np.float64): "MET_DOUBLE",
}
_MET_TO_NP = {v: k for k, v in _MET_TYPES.items()}


def write_mha(path: str | os.PathLike, volume, *, spacing=None, origin=None, direction=None) -> Path:
    """Write ``volume`` ``(D, H, W)`` (or any ``(..., H, W)``) as a single-file MetaImage.

    ``spacing`` / ``origin`` are given in file order (x, y, z); ``direction`` is a (n, n) matrix
    whose columns are the x, y, z axis directions (ITK convention). Defaults: 1, 0, identity.
    """
    arr = _to_numpy(volume)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype not in _MET_TYPES:
        arr = arr.astype(np.float32)
    n = arr.ndim
    dims = arr.shape[::-1]  # first index fastest
    spacing = np.ones(n) if spacing is None else np.asarray(spacing, dtype=float)
    origin = np.zeros(n) if origin is None else np.asarray(origin, dtype=float)
    direction = np.eye(n) if direction is None else np.asarray(direction, dtype=float)
    if spacing.shape != (n,) or origin.shape != (n,) or direction.shape != (n, n):
        raise MedicalIOError(
            f"write_mha({path}): spacing {spacing.shape}, origin {origin.shape}, direction "
            f"{direction.shape} do not match a {n}-D volume (expected ({n},), ({n},), ({n}, {n}))"
        )
    fmt = lambda v: " ".join(f"{float(x):.10g}" for x in np.ravel(v))  # noqa: E731
    header = [
        "ObjectType = Image",
        f"NDims = {n}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        # MetaIO's TransformMatrix is row-major with the axis directions as rows.
        f"TransformMatrix = {fmt(direction.T)}",
        f"Offset = {fmt(origin)}",
        f"CenterOfRotation = {fmt(np.zeros(n))}",
        f"ElementSpacing = {fmt(spacing)}",
        f"DimSize = {' '.join(str(d) for d in dims)}",
        f"ElementType = {_MET_TYPES[arr.dtype]}",
        "ElementDataFile = LOCAL",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return path


def read_mha(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a MetaImage (``.mha`` with local data, or ``.mhd`` + raw file).

    Returns ``(array (D, H, W), meta)`` with ``meta`` holding ``spacing``, ``origin`` (x, y, z
    order), ``direction`` (columns = axes) and the raw header dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MedicalIOError(f"MetaImage file {path} does not exist")
    raw = path.read_bytes()
    header: dict[str, str] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise MedicalIOError(f"{path}: header has no 'ElementDataFile' line (not a MetaImage?)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise MedicalIOError(f"{path}: header line {line!r} is not 'Key = Value'")
        key, value = (s.strip() for s in line.split("=", 1))
        header[key] = value
        if key == "ElementDataFile":
            break
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        etype = _MET_TO_NP[header["ElementType"]]
    except KeyError as exc:
        raise MedicalIOError(
            f"{path}: missing or unsupported header field {exc} "
            f"(supported element types: {sorted(_MET_TO_NP)})"
        ) from exc
    if header.get("CompressedData", "False").lower() == "true":
        raise MedicalIOError(f"{path}: compressed MetaImage data is not supported")
    msb = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False"))
    dtype = etype.newbyteorder(">" if msb.lower() == "true" else "<")
    if header["ElementDataFile"] == "LOCAL":
        data = raw[pos:]
    else:
        data = (path.parent / header["ElementDataFile"]).read_bytes()
    count = int(np.prod(dims))
    if len(data) < count * dtype.itemsize:
        raise MedicalIOError(
            f"{path}: {len(data)} data bytes, expected {count * dtype.itemsize} "
            f"for DimSize {dims} of {header['ElementType']} (truncated?)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count).astype(etype).reshape(dims[::-1])
    n = len(dims)
    fl = lambda k, d: np.array([float(v) for v in header[k].split()]) if k in header else d  # noqa: E731
    direction = fl("TransformMatrix", np.eye(n).ravel()).reshape(n, n).T
    meta = {
        "spacing": fl("ElementSpacing", np.ones(n)),
        "origin": fl("Offset", np.zeros(n)),
        "direction": direction,
        "header": header,
    }
    return arr, meta


def nifti_to_mha_geometry(affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NIfTI affine (RAS+) -> ITK MetaImage ``(spacing, origin, direction)`` (LPS+)."""
    aff = np.asarray(affine, dtype=float)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    lin = ras_to_lps @ aff[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / np.where(spacing > 0, spacing, 1.0)
    origin = ras_to_lps @ aff[:3, 3]
    return spacing, origin, direction


def save_mha_like_nifti(path: str | os.PathLike, volume_ijk, affine) -> Path:
    """Write a volume in nibabel voxel order ``(i, j, k)`` as ``.mha`` in the NIfTI's geometry.

    The MetaImage's x index is the NIfTI's i, so the array is transposed to ``(k, j, i)``.
    """
    spacing, origin, direction = nifti_to_mha_geometry(affine)
    arr = _to_numpy(volume_ijk)
    return write_mha(
        path,
        np.ascontiguousarray(arr.transpose(2, 1, 0)),
        spacing=spacing,
        origin=origin,
        direction=direction,
    )


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
