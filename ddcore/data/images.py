"""Reading real images: any file Pillow can open becomes one 8-bit RGB picture.

Every later stage (captioning, adapter training, CLIP features) expects 8-bit RGB, so the
conversion happens once, here, with the awkward modes handled on purpose rather than by
Pillow's defaults (which clip 16-bit grey to white and drop alpha onto black).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ddcore.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""Lower-case file extensions treated as images when listing folders."""

# Alpha is composited on white: few-shot photos with transparent backgrounds (product shots,
# icons) look like they were photographed on white, not on black as a plain drop would give.
_BACKGROUND = (255, 255, 255, 255)

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def is_image_file(path: Path) -> bool:
    """Whether ``path`` names an image by its extension (case-insensitive).

    Hidden names (starting with '.') are never images: macOS writes ``._photo.jpg``
    resource-fork files next to real ones, and they carry an image extension.
    """
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: Path) -> Image.Image:
    """Open ``path``, decode it fully and return an independent 8-bit RGB image.

    EXIF orientation is applied, alpha (and palette/tRNS transparency) is composited on white,
    16-bit and 32-bit grey are scaled by their real range rather than clipped.

    Raises:
        DataError: the file is missing, truncated, or not an image Pillow can decode.
    """
    path = Path(path)
    try:
        # The context manager closes the file even for multi-frame formats (GIF, TIFF), which
        # Pillow otherwise keeps open after load(); the returned image is always a copy.
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not in a later stage
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "it is a folder"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds (OSError, SyntaxError, ...)
        reason = _one_line(exc)
    raise DataError(f"cannot read image {path}: {reason}; remove or replace the file")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB (a new image)."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        return _grey_to_l(im).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info or _has_palette_alpha(im):
        # convert("RGBA") understands palette alpha, tRNS colour keys and premultiplied modes.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P, CMYK, YCbCr, HSV: Pillow's own conversions are correct for these.
    return im.convert("RGB")


def _has_palette_alpha(im: Image.Image) -> bool:
    """Whether a ``P`` image's palette itself carries alpha (an RGBA palette)."""
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def _grey_to_l(im: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float grey image to 8-bit ``L`` by its real range.

    Pillow's ``convert("L")`` clips these (a 16-bit value 1000 becomes 255), which turns most
    16-bit photos white; dividing by 257 maps 0..65535 exactly onto 0..255 instead.
    """
    data = np.asarray(im).astype(np.float64)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        # 16-bit data (mode "I" is how Pillow opens many 16-bit PNG/TIFF files).
        scaled = data / 257.0
    elif im.mode == "F" and lo >= 0 and hi <= 1.0:
        scaled = data * 255.0  # the usual normalised float image
    elif im.mode == "F" and lo >= 0 and hi <= 255.0:
        scaled = data  # float storage of 8-bit values
    elif hi > lo:
        scaled = (data - lo) * (255.0 / (hi - lo))  # anything else: stretch its own range
    else:
        scaled = np.zeros_like(data)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _one_line(exc: BaseException) -> str:
    """An exception as a short single line (messages from decoders can span lines)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
