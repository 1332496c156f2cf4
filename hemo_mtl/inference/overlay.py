"""overlay.png: a montage a reader can check against the scan without opening the CSV.

Tiles are the slices with a predicted (or, when given, true) bleed, the largest ``max_tiles`` of them,
else the slices of highest p(any); they run in anatomical order, inferior to superior (world z of the
slice from the affine; image folders: file names in natural order). Each slice is shown in the
radiological convention when the affine says where the patient is (top = anterior, image left = patient
right). A caption gives the slice number, its p(any) and the subtypes called on it (p >= the subtype
threshold); predicted outlines are solid, ground truth (optional) dashed, both in the label colour of
the legend (``LABEL_COLORS``: the five subtypes, and ICH for bleed of unknown subtype, the output of a
binary segmentation head, listed when the prediction can hold it or a shown mask does); a Grad-CAM
map (optional) is blended in as a heat map.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..categories import CATEGORY_NAMES, LABEL_COLORS as LABEL_HEX, LABEL_NAMES, MASK_LABELS, SUBTYPES, UNKNOWN_SUBTYPE
from ..data.windowing import window_hu
from .postprocess import contours


def _rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]


# RGB of categories.LABEL_COLORS: one colour per subtype 1..5 (EDH, SDH, SAH, IPH, IVH), and ICH
COLORS = np.array([_rgb(LABEL_HEX[i]) for i in CATEGORY_NAMES], dtype=np.uint8)
UNKNOWN_COLOR = np.array(_rgb(LABEL_HEX[UNKNOWN_SUBTYPE]), dtype=np.uint8)
# colour by mask value 0..6 (0, background, is never drawn)
LABEL_COLORS = np.vstack([np.zeros((1, 3), np.uint8), COLORS, UNKNOWN_COLOR[None]])
LINE = 16  # px per caption line under a tile: name + p(any), subtypes called, (truth)
HEADER = 50  # px above the montage: scan line + legend
GAP = 4
FONT_SIZE = 13


def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def radiological_view(affine: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function (X, Y) slice -> display array: rows anterior to posterior, columns patient right to left,
    when the array's first two axes are the patient's left-right and front-back (an axial scan); the
    array as stored otherwise (no affine, or another slice direction)."""
    if affine is None:
        return lambda a: a
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, np.float64))  # per array axis: (world axis R/A/S, +-1)
    axes, signs = ornt[:2, 0].astype(int), ornt[:2, 1]
    if sorted(axes) != [0, 1]:
        return lambda a: a

    def view(a: np.ndarray) -> np.ndarray:
        ras = a if axes[0] == 0 else a.T  # axis 0 -> left-right, axis 1 -> back-front
        sx, sy = (signs[0], signs[1]) if axes[0] == 0 else (signs[1], signs[0])
        ras = ras[::int(sx), ::int(sy)]  # index up = toward Right / Anterior
        return np.ascontiguousarray(ras[::-1, ::-1].T)
    return view


def _slices(volume) -> list[np.ndarray]:
    if volume is None:
        return []
    return [volume[:, :, k] for k in range(volume.shape[2])] if isinstance(volume, np.ndarray) else list(volume)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def anatomical_order(scan, indices: Sequence[int]) -> list[int]:
    """``indices`` sorted inferior to superior (world z of each slice's centre), image folders by file name."""
    indices = [int(k) for k in indices]
    if isinstance(scan.slices, np.ndarray) and scan.affine is not None:
        a = np.asarray(scan.affine, np.float64)
        cx, cy = (scan.slices.shape[0] - 1) / 2, (scan.slices.shape[1] - 1) / 2
        z = {k: float(a[2] @ np.array([cx, cy, k, 1.0])) for k in indices}
        return sorted(indices, key=lambda k: (z[k], k))
    if scan.names:
        return sorted(indices, key=lambda k: (_natural(scan.names[k]), k))
    return sorted(indices)


def choose_tiles(pred_masks, truth_masks, p_any: np.ndarray, max_tiles: int) -> list[int]:
    """Slices with bleed (predicted or true), the ``max_tiles`` largest; none: the highest p(any)."""
    n = len(pred_masks)
    area = np.array([np.count_nonzero(m) for m in pred_masks], np.float64)
    if truth_masks:
        area += np.array([np.count_nonzero(m) for m in truth_masks], np.float64)
    if (area > 0).any():
        ranked = [int(k) for k in np.argsort(-area, kind="stable") if area[k] > 0]
    else:
        ranked = [int(k) for k in np.argsort(-np.nan_to_num(p_any, nan=-1.0), kind="stable")]
    return ranked[:max_tiles] if n else []


def _gray(scan, k: int) -> np.ndarray:
    if scan.kind == "hu":
        return (window_hu(scan.slices[:, :, k], 40.0, 80.0) * 255).astype(np.uint8)
    return scan.slices[k]


def _fit(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    scale = tile / max(shape)
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    img = Image.fromarray(a)
    return np.asarray(img.resize((size[1], size[0]), Image.NEAREST if nearest else Image.BILINEAR))


def _heat(s: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float colours of matplotlib's 'inferno'."""
    from matplotlib import colormaps

    return colormaps["inferno"](np.clip(s, 0, 1))[..., :3] * 255


def render_tile(gray: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, saliency: np.ndarray | None,
                tile: int) -> np.ndarray:
    """(tile, tile, 3) uint8: the slice letterboxed to ``tile``, saliency blended, outlines drawn at tile
    resolution (predicted 2 px solid, truth 1 px dashed)."""
    size = _fit(gray.shape, tile)
    rgb = np.repeat(_resize(gray, size, nearest=False)[..., None], 3, axis=2).astype(np.float32)
    if saliency is not None:
        s = _resize(np.clip(saliency * 255, 0, 255).astype(np.uint8), size, nearest=False) / 255.0
        alpha = (0.55 * np.clip((s - 0.15) / 0.85, 0, 1))[..., None]  # faint activations stay invisible
        rgb = (1 - alpha) * rgb + alpha * _heat(s)
    rgb = rgb.astype(np.uint8)
    if pred is not None and pred.any():
        edge = ndimage.grey_dilation(contours(_resize(pred.astype(np.uint8), size, nearest=True)), size=(2, 2))
        rgb[edge > 0] = LABEL_COLORS[edge[edge > 0]]
    if truth is not None and truth.any():
        edge = contours(_resize(truth.astype(np.uint8), size, nearest=True))
        r, c = np.indices(edge.shape)
        dash = ((r + c) // 4) % 2 == 0
        on, off = (edge > 0) & dash, (edge > 0) & ~dash
        rgb[on] = LABEL_COLORS[edge[on]]
        rgb[off] = 0
    out = np.zeros((tile, tile, 3), np.uint8)
    top, left = (tile - size[0]) // 2, (tile - size[1]) // 2
    out[top:top + size[0], left:left + size[1]] = rgb
    return out


def legend_labels(pred, masks) -> list[int]:
    """Mask values the legend lists: the subtypes (the classifier's calls use their colours), plus
    ``UNKNOWN_SUBTYPE`` when the prediction's segmenter outputs it or one of ``masks`` holds it."""
    labels = list(CATEGORY_NAMES)
    unknown = UNKNOWN_SUBTYPE in getattr(pred, "seg_labels", ()) or any((m == UNKNOWN_SUBTYPE).any() for m in masks)
    return labels + [UNKNOWN_SUBTYPE] if unknown else labels


def _text_runs(draw: ImageDraw.ImageDraw, xy, runs, font) -> int:
    """Draw (text, colour) runs left to right; returns the x after the last."""
    x, y = xy
    for text, colour in runs:
        draw.text((x, y), text, fill=tuple(int(v) for v in colour), font=font)
        x += int(draw.textlength(text, font=font))
    return x


def overlay(scan, pred, *, truth=None, saliency=None, max_tiles: int = 16, tile: int = 256,
            subtype_threshold: float = 0.5, title: str | None = None, columns: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 montage of ``pred`` on ``scan`` (see the module docstring). ``truth``: label masks
    shaped like ``pred.mask``; ``saliency``: [0, 1] maps shaped like it (default ``pred.saliency``)."""
    pred_masks = _slices(pred.mask)
    truth_masks = _slices(truth)
    if saliency is None:
        saliency = getattr(pred, "saliency", None)
    sal = _slices(saliency)
    cls = np.asarray(pred.cls_prob, np.float64)
    chosen = anatomical_order(scan, choose_tiles(pred_masks, truth_masks, cls[:, 0], max_tiles))
    view = radiological_view(scan.affine) if scan.kind == "hu" else (lambda a: a)
    font, small = _font(FONT_SIZE), _font(FONT_SIZE - 1)
    cols = max(1, min(columns, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    width = max(cols * (tile + GAP) + GAP, 720)
    caption = LINE * (3 if truth_masks else 2) + 4
    height = HEADER + rows * (tile + caption + GAP) + GAP
    canvas = Image.new("RGB", (width, height), (18, 18, 18))
    draw = ImageDraw.Draw(canvas)
    gated = pred.gate_passed

    # header: the scan's call, then the legend
    p_scan = np.nanmax(cls, axis=0) if np.isfinite(cls).any() else np.full(cls.shape[1], np.nan)
    called = [s for i, s in enumerate(SUBTYPES) if np.isfinite(p_scan[i + 1]) and p_scan[i + 1] >= subtype_threshold]
    head = f"{title or scan.path}:  p(any) {p_scan[0]:.2f} (max over slices)"
    _text_runs(draw, (GAP + 2, 4), [(head + ";  called: ", (235, 235, 235))] + (
        [(f"{s} ", COLORS[SUBTYPES.index(s)]) for s in called] or [("none", (235, 235, 235))]), font)
    x = GAP + 2
    y = 26
    for label in legend_labels(pred, pred_masks + truth_masks):
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=tuple(int(v) for v in LABEL_COLORS[label]))
        x = _text_runs(draw, (x + 16, y), [(LABEL_NAMES[label], (235, 235, 235))], small) + 12
    x += 6
    draw.line([x, y + 8, x + 22, y + 8], fill=(235, 235, 235), width=2)
    x = _text_runs(draw, (x + 26, y), [("predicted", (235, 235, 235))], small) + 12
    if truth_masks:
        for d in range(0, 22, 8):
            draw.line([x + d, y + 8, x + d + 4, y + 8], fill=(235, 235, 235), width=1)
        x = _text_runs(draw, (x + 26, y), [("ground truth", (235, 235, 235))], small) + 12
    if sal:
        bar = _heat(np.linspace(0, 1, 40)[None].repeat(10, 0)).astype(np.uint8)
        canvas.paste(Image.fromarray(bar), (x, y + 3))
        x = _text_runs(draw, (x + 44, y), [("Grad-CAM (any)", (235, 235, 235))], small) + 12
    order = "inferior -> superior" if isinstance(scan.slices, np.ndarray) and scan.affine is not None else "file order"
    _text_runs(draw, (x + 6, y), [(f"tiles: {order}", (160, 160, 160))], small)

    for i, k in enumerate(chosen):
        r, c = divmod(i, cols)
        x0, y0 = GAP + c * (tile + GAP), HEADER + r * (tile + caption + GAP)
        t = render_tile(view(_gray(scan, k)), view(pred_masks[k]),
                        view(truth_masks[k]) if truth_masks else None, view(sal[k]) if sal else None, tile)
        canvas.paste(Image.fromarray(t), (x0, y0))
        name = f"slice {k}" if not scan.names else f"{scan.names[k]}"
        p_any = "n/a" if not np.isfinite(cls[k, 0]) else f"{cls[k, 0]:.2f}"
        _text_runs(draw, (x0 + 2, y0 + tile + 2), [(f"{name}   p(any) {p_any}", (235, 235, 235))], font)
        if gated is not None and not bool(gated[k]):
            line = [("gated off (p(any) below the cascade threshold)", (160, 160, 160))]
        else:
            line = [(f"{s} {cls[k, j + 1]:.2f}  ", COLORS[j]) for j, s in enumerate(SUBTYPES)
                    if np.isfinite(cls[k, j + 1]) and cls[k, j + 1] >= subtype_threshold]
            line = line or [(f"no subtype >= {subtype_threshold:.2f}", (160, 160, 160))]
        _text_runs(draw, (x0 + 2, y0 + tile + 2 + LINE), line, small)
        if truth_masks:
            present = [(f"{LABEL_NAMES[v]} ", LABEL_COLORS[v]) for v in MASK_LABELS if (truth_masks[k] == v).any()]
            _text_runs(draw, (x0 + 2, y0 + tile + 2 + 2 * LINE),
                       [("truth: ", (200, 200, 200))] + (present or [("none", (200, 200, 200))]), small)
    return np.asarray(canvas)
