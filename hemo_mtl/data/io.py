"""Reading head CT from disk: NIfTI volumes, DICOM series, and 2D PNG/JPG slices.

Everything returns plain arrays plus geometry. Volumes follow nibabel's layout (X, Y, Z) with Z the
axial slice axis, so a slice is ``volume[:, :, k]`` and masks written on the same affine round-trip
exactly. DICOM series are put in that same layout (pixel columns along X, rows along Y, as dcm2niix
does), so a series and its NIfTI conversion give the same slices. A 2D slice array is used as is as
an (H, W) image everywhere (model, masks, COCO export, PNGs we write); PNG/JPG files are read as
(rows, cols) pictures, and they are *display* images (already windowed 8-bit), never HU: ``kind``
says which, and the dataset windows only HU.
"""
from __future__ import annotations

import gzip
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


class DataError(ValueError):
    """A user's file is unusable; the message names the file and the problem."""


@dataclass
class Volume:
    data: np.ndarray  # (X, Y, Z) float32 HU, or uint8 for label masks
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    path: str
    kind: str = "hu"  # "hu" or "display"
    files: list[str] | None = None  # DICOM series: the file of each slice, in volume (z) order

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))


# ----------------------------------------------------------------------------------------------- NIfTI
def load_nifti(path, dtype=np.float32) -> Volume:
    """A 3D NIfTI volume with its affine; 4D files with a singleton 4th axis are squeezed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=dtype)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); truncated or not a NIfTI file?") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume (X, Y, Z), got shape {data.shape}")
    return Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), path=str(path))


def load_nifti_mask(path, like: Volume, atol: float = 1e-3) -> Volume:
    """A label mask that must share its scan's shape and affine (else voxels would not line up)."""
    mask = load_nifti(path, dtype=np.float32)
    if mask.data.shape != like.data.shape:
        raise DataError(f"{path}: mask shape {mask.data.shape} differs from its scan {like.path} {like.data.shape}")
    if not np.allclose(mask.affine, like.affine, atol=atol):
        raise DataError(f"{path}: mask affine differs from its scan {like.path}")
    values = np.unique(mask.data)
    if np.any(values != np.round(values)) or values.min() < 0:
        raise DataError(f"{path}: mask holds non-integer or negative values {values[:8]}")
    return Volume(data=mask.data.astype(np.uint8), affine=mask.affine, path=str(path), kind="mask")


def save_nifti(data: np.ndarray, affine: np.ndarray, path) -> None:
    """Write atomically: a crashed run never leaves a half-written volume under the final name."""
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(data, affine), str(tmp))


# ----------------------------------------------------------------------------------------------- DICOM
def _pydicom():
    import pydicom

    return pydicom


def read_dicom_hu(ds, path) -> np.ndarray:
    """Stored pixel values -> HU with the file's RescaleSlope/Intercept, in the (X, Y) layout."""
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many types for missing/compressed pixel data
        raise DataError(f"{path}: cannot decode pixel data ({exc})") from exc
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return (pixels * slope + intercept).T


def load_dicom_slice(path) -> np.ndarray:
    """One DICOM file (e.g. an RSNA 2019 slice) as HU float32 (X, Y)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        ds = _pydicom().dcmread(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc
    return read_dicom_hu(ds, path)


def load_dicom_series(folder, series_uid: str | None = None, gap_tolerance: float = 0.1) -> Volume:
    """A DICOM series folder as one HU volume sorted along the slice normal, with its RAS affine.

    Mixed series (unless ``series_uid`` picks one), duplicate positions, missing slices (a gap larger
    than the typical step) and inconsistent spacing are errors naming the folder: each would silently
    corrupt volumes and lesion sizes otherwise.
    """
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found")
    headers = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            continue  # not a DICOM file (DICOMDIR, notes, thumbnails)
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            headers.append((f, ds))
    if not headers:
        raise DataError(f"{folder}: no DICOM image files with position/orientation found")
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in headers})
    if series_uid is not None:
        headers = [(f, ds) for f, ds in headers if str(ds.get("SeriesInstanceUID", "")) == series_uid]
        if not headers:
            raise DataError(f"{folder}: series {series_uid} not found (have {uids})")
    elif len(uids) > 1:
        raise DataError(f"{folder}: mixes {len(uids)} DICOM series {uids}; pass series_uid to pick one")

    iop = np.array(headers[0][1].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=np.float64) for _, ds in headers])
    order = np.argsort(positions @ normal, kind="stable")
    headers = [headers[i] for i in order]
    dist = (positions @ normal)[order]
    steps = np.diff(dist)
    if np.any(np.isclose(steps, 0.0, atol=1e-3)):
        dup = [str(headers[i + 1][0].name) for i in np.flatnonzero(np.isclose(steps, 0.0, atol=1e-3))]
        raise DataError(f"{folder}: duplicate slice positions (files {dup[:5]})")
    if len(steps):
        step = float(np.median(steps))
        gaps = np.flatnonzero(steps > step * (1.0 + gap_tolerance) + 1e-3)
        if len(gaps):
            where = [f"after z={dist[i]:.1f} mm ({steps[i] / step:.1f} steps)" for i in gaps[:5]]
            raise DataError(f"{folder}: missing slices, {len(gaps)} gap(s) in the series: {', '.join(where)}")
        if np.any(np.abs(steps - step) > step * gap_tolerance + 1e-3):
            raise DataError(f"{folder}: inconsistent slice spacing {np.unique(np.round(steps, 2))} mm")
    else:
        step = float(getattr(headers[0][1], "SliceThickness", 1.0) or 1.0)

    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
    if len(shapes) > 1:
        raise DataError(f"{folder}: slices of different sizes {sorted(shapes)}")
    slices = [read_dicom_hu(pydicom.dcmread(str(f)), f) for f, _ in headers]
    data = np.stack(slices, axis=-1).astype(np.float32)

    dr, dc = (float(v) for v in headers[0][1].PixelSpacing)  # row spacing, column spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc  # X index walks along a row (across columns)
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[order[0]]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    return Volume(data=data, affine=affine, path=str(folder), files=[str(f) for f, _ in headers])


# ----------------------------------------------------------------------------------------- 2D images
# Scanned or re-exported CT figures carry a faint colour tint (channel differences up to ~60 grey
# levels); an overlay, annotation or photo reaches far higher. Above this the image is refused.
MAX_TINT = 64


def load_display_image(path, max_tint: int = MAX_TINT) -> np.ndarray:
    """A PNG/JPG slice as a uint8 (rows, cols) grayscale picture.

    RGB/RGBA files are fine when they are grayscale renderings (equal channels, or a faint tint up to
    ``max_tint`` grey levels, converted with the ITU-R 601 luma weights); colour images whose
    channels really differ (coloured overlays, photos) are refused with the file named.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                raise DataError(f"{path}: {img.mode} image is not an 8-bit display image (16-bit HU PNG? use load_hu_png)")
            if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
                rgb = np.asarray(img.convert("RGB")).astype(np.int16)
                tint = int((rgb.max(axis=-1) - rgb.min(axis=-1)).max())
                if tint > max_tint:
                    raise DataError(
                        f"{path}: colour image whose channels differ (up to {tint} grey levels): "
                        "not a grayscale CT rendering"
                    )
                gray = np.asarray(img.convert("L"))
            else:
                gray = np.asarray(img.convert("L"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    return np.ascontiguousarray(gray)


def load_hu_png(path, offset: float = 32768.0) -> np.ndarray:
    """A 16-bit PNG written by our converter as HU + 32768 (lossless HU export)."""
    with Image.open(path) as img:
        arr = np.asarray(img).astype(np.float32)
    return arr - offset


def save_png(arr: np.ndarray, path) -> None:
    """Write a 2D slice (uint8, uint16, or (H, W, 3) uint8) as a PNG picture as is, atomically."""
    from ..atomic import atomic_path

    pic = np.ascontiguousarray(arr)
    with atomic_path(path) as tmp:
        Image.fromarray(pic).save(tmp, format="PNG")


# ------------------------------------------------------------------------------------ slice references
def split_ref(ref: str) -> tuple[str, int | None, int | None]:
    """``"path#k@n"`` -> (path, k, n): slice k of a volume, and for binary masks the label n to give
    foreground pixels (``@0`` marks an all-background slice). Plain paths -> (path, None, None)."""
    text = str(ref)
    label = None
    head, sep, tail = text.rpartition("@")
    if sep and tail.isdigit():
        text, label = head, int(tail)
    path, sep, idx = text.rpartition("#")
    if sep and idx.isdigit():
        return path, int(idx), label
    return text, None, label


class VolumeCache:
    """Keeps recently decoded volumes: a dataset reads many slices of one .nii.gz in a row."""

    def __init__(self, max_bytes: float = 2e9):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, path: str, loader) -> np.ndarray:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        arr = loader(path)
        self._items[path] = arr
        self._bytes += arr.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return arr


def read_slice(ref: str, kind: str, cache: VolumeCache | None = None) -> np.ndarray:
    """The 2D (X, Y) array a manifest ``image``/``mask`` reference points to.

    ``kind`` is "hu" (float32 HU), "display" (uint8) or "mask" (uint8 labels 0..5).
    """
    path, idx, label = split_ref(ref)
    if idx is None:
        suffix = Path(path).suffix.lower()
        if kind == "hu":
            arr = load_hu_png(path) if suffix == ".png" else load_dicom_slice(path)
        else:
            arr = load_display_image(path)
    else:
        def _load(p: str) -> np.ndarray:
            data = load_nifti(p, dtype=np.float32).data
            if kind == "hu":
                if np.array_equal(data, np.round(data)) and data.min() >= -32768 and data.max() < 32768:
                    return data.astype(np.int16)  # integral HU: half the cache memory
                return data
            return data.astype(np.uint8)

        vol = cache.get(path, _load) if cache is not None else _load(path)
        if not 0 <= idx < vol.shape[2]:
            raise DataError(f"{path}: slice {idx} out of range (volume has {vol.shape[2]} slices)")
        arr = vol[:, :, idx]
    if kind == "hu":
        return arr.astype(np.float32)
    if kind == "mask" and label is not None:
        # binary masks: JPEG masks are lossy, so threshold at mid-grey rather than > 0
        threshold = 127 if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png") else 0
        return ((arr > threshold) * label).astype(np.uint8)
    return arr.astype(np.uint8)


def write_dicom_series(volume_hu: np.ndarray, affine: np.ndarray, folder, patient_id: str = "anon",
                       series_uid: str | None = None, slope: float = 1.0, intercept: float = -1024.0,
                       shuffle_names: bool = False) -> list[Path]:
    """Write an (X, Y, Z) HU volume as a CT DICOM series whose ``load_dicom_series`` gives it back.

    Used by tests and to hand phantom scans to DICOM-only tools; stored values are
    ``(HU - intercept) / slope`` as uint16, so the rescale path is exercised.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    sx, sy, sz = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    row_dir, col_dir = lps[:3, 0] / sx, lps[:3, 1] / sy
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    paths = []
    n = volume_hu.shape[2]
    order = np.random.default_rng(0).permutation(n) if shuffle_names else np.arange(n)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{int(order[k]):04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = patient_id
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        position = lps[:3, 3] + k * lps[:3, 2]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [sy, sx]  # [row spacing, column spacing]
        ds.SliceThickness = sz
        pixels = np.round((volume_hu[:, :, k].T - intercept) / slope)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = np.clip(pixels, 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths
