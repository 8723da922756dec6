"""Classic codecs to compare against: JPEG, WebP, AVIF (Pillow) and JPEG XL.

Each codec turns an RGB image into the bytes of a whole file at one quality setting and
back; nothing touches the disk except the cjxl/djxl route, which has to. Images are passed
without metadata (no EXIF, no ICC profile) so that every codec pays for pixels only.

JPEG XL: Debian's ``cjxl``/``djxl`` when on PATH, else the ``pillow-jxl-plugin`` package
when importable, else unavailable with the reason. Both use libjxl at its default effort 7;
the cjxl route's times include starting the processes and PNG input/output.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from PIL import Image, features

# Quality ladders spanning about 0.1-2 bpp on scikit-image's photos (measured: JPEG q5 is
# about 0.15 bpp, its floor; q90 about 2 bpp).
LADDERS = {
    "jpeg": (5, 10, 20, 35, 50, 70, 85, 90),
    "webp": (1, 5, 15, 30, 50, 70, 85, 90),
    "avif": (5, 15, 30, 45, 60, 75, 85),
    "jxl": (10, 20, 30, 45, 65, 80, 90),  # cjxl 0.7 refuses distances above 15 (quality < 8)
}
NAMES = tuple(LADDERS)


@dataclass
class Codec:
    key: str  # file name stem and --baselines name
    name: str  # curve name in the JSON and the plot
    description: str
    encode: Callable[[Image.Image, int], bytes] | None
    decode: Callable[[bytes], Image.Image] | None
    qualities: tuple[int, ...] = ()
    unavailable: str | None = None  # why the codec cannot run here
    notes: list[str] = field(default_factory=list)


def _pillow_encoder(fmt: str, **options) -> Callable[[Image.Image, int], bytes]:
    def encode(img: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=quality, **options)
        return buf.getvalue()

    return encode


def _pillow_decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _jxl_tools() -> Codec | None:
    cjxl, djxl = shutil.which("cjxl"), shutil.which("djxl")
    if not (cjxl and djxl):
        return None
    version = subprocess.run([cjxl, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    version = version[0] if version else "cjxl"

    def encode(img: Image.Image, quality: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "in.png", Path(tmp) / "out.jxl"
            img.save(src, format="PNG", compress_level=1)
            _run([cjxl, str(src), str(out), "-q", str(quality)])
            return out.read_bytes()

    def decode(data: bytes) -> Image.Image:
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "in.jxl", Path(tmp) / "out.png"
            src.write_bytes(data)
            _run([djxl, str(src), str(out)])
            return _pillow_decode(out.read_bytes())

    description = f"JPEG XL ({version}, effort 7; times include process start and PNG I/O)"
    return Codec("jxl", "JPEG XL", description, encode, decode)


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {last[-1] if last else r.returncode}")


def _jxl_plugin() -> Codec | str:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError as e:
        return f"neither cjxl/djxl on PATH nor pillow-jxl-plugin importable ({e})"
    # lossless_jpeg=False: never take the plugin's JPEG-recompression path.
    encode = _pillow_encoder("JXL", effort=7, lossless_jpeg=False)
    description = f"JPEG XL (pillow-jxl-plugin {_version('pillow-jxl-plugin')}, effort 7)"
    return Codec("jxl", "JPEG XL", description, encode, _pillow_decode)


def get(key: str) -> Codec:
    """The codec named ``key`` (one of NAMES); ``unavailable`` says why it cannot run here."""
    pillow = f"Pillow {_version('pillow')}"
    if key == "jpeg":
        codec = Codec(
            key, "JPEG", f"JPEG (libjpeg {features.version('jpg')} via {pillow}, 4:2:0, optimized Huffman)",
            _pillow_encoder("JPEG", optimize=True), _pillow_decode,
        )  # fmt: skip
    elif key == "webp":
        codec = Codec(
            key, "WebP", f"WebP (libwebp {features.version('webp')} via {pillow}, method 6)",
            _pillow_encoder("WEBP", method=6), _pillow_decode,
        )  # fmt: skip
    elif key == "avif":
        if not features.check("avif"):
            return Codec(key, "AVIF", "AVIF", None, None, unavailable=f"{pillow} was built without AVIF support")
        codec = Codec(
            key, "AVIF", f"AVIF (libavif {features.version('avif')} via {pillow}, 4:2:0, speed 6)",
            _pillow_encoder("AVIF"), _pillow_decode,
        )  # fmt: skip
    elif key == "jxl":
        found = _jxl_tools() or _jxl_plugin()
        if isinstance(found, str):
            return Codec(key, "JPEG XL", "JPEG XL", None, None, unavailable=found)
        codec = found
    else:
        raise KeyError(key)
    codec.qualities = LADDERS[key]
    return codec
