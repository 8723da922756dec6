"""Turning user images into the model's RGB tensor and back, mode by mode.

What is kept and how:
- RGB, L: coded as RGB (gray replicated), decoded in the original mode.
- 1 (bilevel): coded as gray, decoded by thresholding at 128.
- RGBA, LA: colour coded by the model, the alpha plane stored losslessly (PNG) beside it.
- P (palette): coded as RGB, decoded back onto the stored palette (no dithering);
  a palette with transparency is coded as RGBA.
- 16-bit gray (I;16*, I): converted to 8 bits (value / 257), with a note.
- CMYK, YCbCr, LAB, HSV, PA: converted to RGB (or RGBA), with a note; decoded as such.
- 32-bit float (F): refused.
EXIF orientation is applied first: the decoded image is the upright one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import FormatError, InputError

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
CONVERTED = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "PA": "RGBA"}
# What the codec's functions accept as an image (see to_pil).
ImageLike = Image.Image | np.ndarray | torch.Tensor


@dataclass
class PreparedImage:
    rgb: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    mode: str  # the mode decode returns
    alpha: bytes | None = None
    palette: bytes | None = None
    notes: list[str] = field(default_factory=list)


def to_pil(image: ImageLike) -> Image.Image:
    """Accept a PIL image, a uint8 array (H, W[, 3|4]) or a float tensor ([1,] 3, H, W) in [0, 1]."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
            raise InputError(f"tensor images must be float (3, H, W) in [0, 1], got {tuple(image.shape)} {image.dtype}")
        image = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise InputError(f"array images must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {image.shape} {image.dtype}")
        return Image.fromarray(image)
    hint = ": open the file first (PIL.Image.open)" if isinstance(image, (str, Path)) else ""
    raise InputError(f"cannot code an image of type {type(image).__name__}{hint}")


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes (an image or an .ainn file); a missing or unreadable one is an
    InputError naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def open_image(path: str | Path) -> Image.Image:
    """An image file, loaded; a missing, unreadable, unknown or damaged file is an
    InputError naming it (Pillow's own errors are tracebacks to a user)."""
    data = read_bytes(path)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image format Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: damaged image ({e})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as the codec sees its colours: upright (EXIF), 16-bit samples scaled
    to 8 bits as :func:`prepare` does (Pillow's ``convert("RGB")`` would clip them to
    255), then RGB; uint8 (H, W, 3). For training crops and evaluation references."""
    img = _upright(open_image(path))
    img = _eight_bit(img) or img
    if img.mode == "F":
        raise InputError(f"{path}: 32-bit floating-point images are not supported")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _upright(img: Image.Image) -> Image.Image:
    try:
        img = ImageOps.exif_transpose(img)
        img.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"image data is damaged: {e}") from None
    return img


def _eight_bit(img: Image.Image) -> Image.Image | None:
    """A 16-bit gray image as 8-bit gray (value / 257, rounded); None for other modes."""
    if img.mode not in SIXTEEN_BIT:
        return None
    arr = np.asarray(img, dtype=np.int64).clip(0, 65535)
    return Image.fromarray(((arr + 128) // 257).astype(np.uint8), "L")


def prepare(image: ImageLike) -> PreparedImage:
    img = _upright(to_pil(image))
    notes: list[str] = []
    mode = img.mode
    if mode in SIXTEEN_BIT:
        img = _eight_bit(img)
        notes.append(f"{mode} (16-bit) image converted to 8 bits per sample")
        mode = "L"
    elif mode == "F":
        raise InputError("32-bit floating-point images are not supported; save the image with 8 or 16 bits")
    elif mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
        notes.append("palette image with transparency coded as RGBA")
    elif mode in CONVERTED:
        notes.append(f"{mode} image coded as {CONVERTED[mode]}")
        img, mode = img.convert(CONVERTED[mode]), CONVERTED[mode]
    prepared = PreparedImage(rgb=torch.empty(0), mode=mode, notes=notes)
    if mode == "P":
        prepared.palette = bytes(img.getpalette() or [])[: 3 * 256]
    if mode in ("RGBA", "LA"):
        buf = io.BytesIO()
        img.getchannel("A").save(buf, format="PNG", optimize=True)
        prepared.alpha = buf.getvalue()
    if mode not in ("L", "RGB", "RGBA", "LA", "P", "1"):
        raise InputError(f"image mode {mode!r} is not supported")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    prepared.rgb = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float().div(255)
    return prepared


def restore(x_hat: torch.Tensor, mode: str, alpha: bytes | None, palette: bytes | None) -> Image.Image:
    """The decoded (1, 3, H, W) tensor as a PIL image in the coded mode."""
    arr = (x_hat[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(arr, "RGB")
    if mode in ("L", "LA"):
        img = img.convert("L")
    elif mode == "1":
        img = img.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    elif mode == "P":
        if not palette:
            raise FormatError("palette image without a palette")
        pal = Image.new("P", (1, 1))
        pal.putpalette(palette)
        img = img.quantize(palette=pal, dither=Image.Dither.NONE)
    if mode in ("RGBA", "LA"):
        if alpha is None:
            raise FormatError(f"{mode} image without its alpha plane")
        try:
            a = Image.open(io.BytesIO(alpha))
            a.load()
        except Exception:
            raise FormatError("alpha plane is damaged") from None
        if a.mode != "L" or a.size != img.size:
            raise FormatError(f"alpha plane is {a.mode} {a.size}, expected L {img.size}")
        img.putalpha(a)
    return img
