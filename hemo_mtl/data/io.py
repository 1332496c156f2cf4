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
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


class DataError(ValueError):
    """A user's file is unusable; the message names the file and the problem."""


class DataWarning(UserWarning):
    """Input that is used, with something left out or changed that the user should know about."""


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
    affine = np.asarray(img.affine, dtype=np.float64)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.isfinite(affine).all() or np.any(sizes < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        # a zero or NaN voxel size breaks every volume in mL and every mask written on this affine
        raise DataError(f"{path}: unusable NIfTI affine (voxel sizes {np.round(sizes, 4).tolist()} mm, "
                        f"determinant {np.linalg.det(affine[:3, :3]):.3g}): header damaged?")
    return Volume(data=data, affine=affine, path=str(path))


def load_nifti_mask(path, like: Volume, atol: float = 1e-3, max_label: int = 255) -> Volume:
    """A label mask that must share its scan's shape and affine (else voxels would not line up).

    Labels must be integers in 0..``max_label`` (a subtype mask passes 5): an int16 label 257 would
    otherwise wrap to 1 in the uint8 mask and silently become an EDH."""
    mask = load_nifti(path, dtype=None)  # the stored dtype: int32 labels stay exact, no float copy
    if mask.data.shape != like.data.shape:
        raise DataError(f"{path}: mask shape {mask.data.shape} differs from its scan {like.path} {like.data.shape}")
    if not np.allclose(mask.affine, like.affine, atol=atol):
        raise DataError(f"{path}: mask affine differs from its scan {like.path}")
    values = np.unique(mask.data)
    if np.any(values != np.round(values)) or values.min() < 0:  # NaN != NaN: caught here too
        raise DataError(f"{path}: mask holds non-integer or negative values {values[:8]}")
    bad = values[values > max_label]
    if len(bad):
        raise DataError(f"{path}: unknown subtype label(s) {bad.astype(np.int64)[:8].tolist()} (expected 0..{max_label})")
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


def dicom_numbers(ds, tag: str, path, count: int | None = None, default=None) -> np.ndarray:
    """A numeric DICOM tag (DS/IS, single or multi-valued) as float64 values, checked where it is read.

    Missing (without a ``default``), malformed, non-finite or of the wrong multiplicity is a DataError
    naming the file and the tag: a missing PixelSpacing must not surface as an AttributeError.
    """
    try:
        value = ds.get(tag)
        if value is None or value == "":
            if default is None:
                raise DataError(f"{path}: DICOM tag {tag} missing")
            value = default
        items = [value] if isinstance(value, (int, float, str, bytes)) else list(value)  # DSfloat is a float
        out = np.array([float(v) for v in items], dtype=np.float64)
    except DataError:
        raise
    except Exception as exc:  # pydicom raises on malformed DS/IS strings, float() on others
        raise DataError(f"{path}: DICOM tag {tag} unreadable ({exc})") from exc
    if count is not None and out.shape != (count,):
        raise DataError(f"{path}: DICOM tag {tag} has {out.size} value(s), expected {count}")
    if not np.isfinite(out).all():
        raise DataError(f"{path}: DICOM tag {tag} is not finite ({out.tolist()})")
    return out


def read_dicom_hu(ds, path) -> np.ndarray:
    """Stored pixel values -> HU with the file's RescaleSlope/Intercept, in the (X, Y) layout."""
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many types for missing/compressed pixel data
        raise DataError(f"{path}: cannot decode pixel data ({exc})") from exc
    if pixels.ndim != 2:
        raise DataError(f"{path}: pixel data of shape {pixels.shape} is not one grayscale slice")
    slope = float(dicom_numbers(ds, "RescaleSlope", path, 1, default=1.0)[0]) or 1.0
    intercept = float(dicom_numbers(ds, "RescaleIntercept", path, 1, default=0.0)[0])
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


def load_dicom_series(folder, series_uid: str | None = None, gap_tolerance: float = 0.1,
                      tilt_tolerance: float = 0.01) -> Volume:
    """A DICOM series folder as one HU volume sorted along the slice normal, with its RAS affine.

    Mixed series (unless ``series_uid`` picks one), slices oriented differently, duplicate positions,
    missing slices (a gap larger than the typical step), inconsistent spacing and missing or malformed
    geometry tags are errors naming the folder or file: each would silently corrupt volumes and lesion
    sizes otherwise. A gantry-tilted series (slice origins shifted in-plane, beyond ``tilt_tolerance``
    mm, as the normal advances) is resampled onto the orthogonal grid, as dcm2niix does, so the affine
    is true and the voxels stay rectangular (a DataWarning gives the tilt).
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

    iops = [dicom_numbers(ds, "ImageOrientationPatient", f, 6) for f, ds in headers]
    positions = np.array([dicom_numbers(ds, "ImagePositionPatient", f, 3) for f, ds in headers])
    spacings = [dicom_numbers(ds, "PixelSpacing", f, 2) for f, ds in headers]
    sizes = {(int(dicom_numbers(ds, "Rows", f, 1)[0]), int(dicom_numbers(ds, "Columns", f, 1)[0])) for f, ds in headers}
    iop = iops[0]
    row_dir, col_dir = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row_dir), 1, atol=1e-3) and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-3)
            and abs(float(row_dir @ col_dir)) < 1e-3):
        raise DataError(f"{headers[0][0]}: ImageOrientationPatient {iop.tolist()} is not two orthonormal directions")
    for (f, _), other in zip(headers, iops):
        if not np.allclose(other, iop, atol=1e-4):
            raise DataError(f"{f}: oriented differently from {headers[0][0].name} (ImageOrientationPatient "
                            f"{other.round(4).tolist()} vs {iop.round(4).tolist()}): mixed orientations in one series")
    for (f, _), other in zip(headers, spacings):
        if not np.allclose(other, spacings[0], atol=1e-4):
            raise DataError(f"{f}: PixelSpacing {other.tolist()} differs from {headers[0][0].name} {spacings[0].tolist()}")
        if not np.all(other > 0):
            raise DataError(f"{f}: DICOM tag PixelSpacing must be positive, got {other.tolist()}")
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(positions @ normal, kind="stable")
    headers = [headers[i] for i in order]
    positions = positions[order]
    dist = positions @ normal
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
        step = float(dicom_numbers(headers[0][1], "SliceThickness", headers[0][0], 1, default=1.0)[0]) or 1.0

    if len(sizes) > 1:
        raise DataError(f"{folder}: slices of different sizes {sorted(sizes)}")
    slices = [read_dicom_hu(pydicom.dcmread(str(f)), f) for f, _ in headers]
    if len({sl.shape for sl in slices}) > 1:
        raise DataError(f"{folder}: slices of different sizes {sorted({sl.shape for sl in slices})}")
    data = np.stack(slices, axis=-1).astype(np.float32)

    dr, dc = (float(v) for v in spacings[0])  # row spacing, column spacing
    # in-plane offset of each slice origin from the orthogonal grid through the first one (gantry tilt)
    rel = positions - positions[0]
    offset = rel - np.outer(rel @ normal, normal)
    if len(offset) and float(np.abs(offset).max()) > tilt_tolerance:
        data = _untilt(data, offset @ row_dir / dc, offset @ col_dir / dr)
        import warnings

        tilt = np.degrees(np.arctan2(np.linalg.norm(offset[-1]), dist[-1] - dist[0]))
        warnings.warn(f"{folder}: gantry tilt {tilt:.1f} deg: slices resampled onto an orthogonal grid "
                      f"(in-plane shift up to {np.linalg.norm(offset, axis=1).max():.1f} mm)", DataWarning, stacklevel=2)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc  # X index walks along a row (across columns)
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    return Volume(data=data, affine=affine, path=str(folder), files=[str(f) for f, _ in headers])


def _untilt(data: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray) -> np.ndarray:
    """Shift slice k by (shift_x[k], shift_y[k]) voxels (linear interpolation, air outside): the voxel
    stored at (i, j) lies at (i + shift_x, j + shift_y) of the orthogonal grid through slice 0."""
    from scipy import ndimage

    out = np.empty_like(data)
    fill = float(data.min())
    for k in range(data.shape[2]):
        out[:, :, k] = ndimage.shift(data[:, :, k], (shift_x[k], shift_y[k]), order=1, mode="constant", cval=fill)
    return out


# ----------------------------------------------------------------------------------------- 2D images
# Scanned or re-exported CT figures carry a faint colour tint (channel differences up to ~60 grey
# levels); an overlay, annotation or photo reaches far higher. A pixel whose channels differ by more
# than MAX_TINT is "coloured".
MAX_TINT = 64
# Viewer exports burn coloured text and markers into grey slices (a red "Annotation OFF", a yellow
# ruler). Their share of the picture is bounded by how much text fits in the margins: four corner
# blocks of five 20-character lines in an 8x13-pixel font with ~25% ink colour ~2% of a 512x512 image
# (one stroke-wide ruler ~0.4%), ~8% if the image is only 256x256 and every corner is full; real
# exports show a few percent or less. A colour overlay (a heat map, a fused image, a photo) colours
# most of the head. 5% keeps every plausible annotation and refuses those; a lesion overlay smaller
# than that is indistinguishable by share alone and is read as grey (its pixels reported).
MAX_COLOURED_SHARE = 0.05


@dataclass
class DisplayImage:
    pixels: np.ndarray  # uint8 (rows, cols)
    coloured: int = 0  # pixels whose channels differed by more than MAX_TINT (burned-in text/markers)


def read_display_image(path, max_tint: int = MAX_TINT, max_coloured: float = MAX_COLOURED_SHARE,
                       mask_colour: bool = False) -> DisplayImage:
    """A PNG/JPG slice as a uint8 (rows, cols) grayscale picture, with its count of coloured pixels.

    RGB/RGBA/palette files are fine when they are grayscale renderings: equal channels, a faint tint
    up to ``max_tint`` grey levels, or coloured pixels (burned-in text, markers) on at most
    ``max_coloured`` of the picture; they become grey with the ITU-R 601 luma weights, the coloured
    ones too (like white burned-in text) unless ``mask_colour`` sets them to 0, the background they
    are drawn on. More colour than that is an overlay or a photo: refused with the file named.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    coloured = 0
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                raise DataError(f"{path}: {img.mode} image is not an 8-bit display image (16-bit HU PNG? use load_hu_png)")
            if img.mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(img.convert("RGB")).astype(np.int16)
                is_coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > max_tint
                coloured = int(np.count_nonzero(is_coloured))
                share = coloured / max(is_coloured.size, 1)
                if share > max_coloured:
                    raise DataError(
                        f"{path}: colour image whose channels differ on {share:.1%} of its pixels (by more than "
                        f"{max_tint} grey levels; burned-in text and markers stay under {max_coloured:.0%}): "
                        "a colour overlay or photo, not a grayscale CT rendering"
                    )
                gray = np.asarray(img.convert("L"))
                if mask_colour and coloured:
                    gray = gray.copy()
                    gray[is_coloured] = 0
            else:
                gray = np.asarray(img.convert("L"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    return DisplayImage(np.ascontiguousarray(gray), coloured)


def load_display_image(path, max_tint: int = MAX_TINT, max_coloured: float = MAX_COLOURED_SHARE,
                       mask_colour: bool = False) -> np.ndarray:
    """The uint8 (rows, cols) picture of ``read_display_image`` (same checks)."""
    return read_display_image(path, max_tint, max_coloured, mask_colour).pixels


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Masks that releases keep beside their slices: CT-ICH's <s>_HGE_Seg.jpg, and the common _mask/_seg.
MASK_SUFFIXES = ("_hge_seg", "_seg", "_mask")


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: 1.jpg, 2.jpg, ..., 10.jpg (text order puts 10 before 2)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name).lower())]


def is_mask_file(path) -> bool:
    """A slice-folder file named as a mask (``<s>_HGE_Seg.jpg``, ``<s>_mask.png``, ``<s>_seg.png``)."""
    return Path(path).stem.lower().endswith(MASK_SUFFIXES)


def list_slice_images(folder) -> list[Path]:
    """The PNG/JPG slices of an image folder in natural (numeric) order, the one listing every reader uses.

    Files named as masks are left out (a DataWarning names how many and the first); hidden files are
    ignored. Two files that differ only in extension (``1.jpg`` and ``1.png``) are a DataError: which
    one is slice 1 is not known, and their outputs would share one name.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES]
    masks = sorted((p for p in files if is_mask_file(p)), key=lambda p: natural_key(p.name))
    images = sorted((p for p in files if not is_mask_file(p)), key=lambda p: (natural_key(p.stem), p.name))
    stems: dict[str, str] = {}
    for p in images:
        other = stems.setdefault(p.stem.lower(), p.name)
        if other != p.name:
            raise DataError(f"{folder}: {other} and {p.name} are both slice {p.stem!r}; keep one of them")
    if masks:
        import warnings

        warnings.warn(f"{folder}: {len(masks)} mask file(s) left out of the slices ({masks[0].name}, ...)",
                      DataWarning, stacklevel=2)
    return images


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
            if data.size and not (np.nanmin(data) >= 0 and np.nanmax(data) <= 255 and np.isfinite(data).all()):
                raise DataError(f"{p}: mask labels outside 0..255 (they would wrap in uint8)")
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
    frame_uid = generate_uid()  # one patient coordinate system for the whole series
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
        # type 2 attributes of the CT image IOD: present, empty where nothing is known
        ds.PatientName = ds.PatientBirthDate = ds.PatientSex = ""
        ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ds.StudyID = ""
        ds.Manufacturer = ""
        ds.SeriesNumber = 1
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = frame_uid
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
