"""The .ainn container: header, payloads, checksum (byte layout in docs/format.md).

Parsing validates every field and every length against the actual byte count before
anything is allocated or decoded, so a damaged or hostile file fails with a
:class:`FormatError` and never with a crash or a huge allocation.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from .errors import FormatError

MAGIC = b"AINN"
VERSION = 3  # 3: as 2, plus the image's scale shift (the encoder's choice of scale thresholds)
# 2: fixed-point entropy parameters, wavefront symbol order; 1: float parameters, raster
# order (decodes on the device that made it)
READABLE_VERSIONS = (1, 2, 3)
MAX_SIDE = 65535
HASH_BYTES = 16

METRIC_CODES = {"mse": 0, "ms-ssim": 1}
# The mode the decoder returns: the input's own mode for these.
MODE_CODES = {"L": 0, "RGB": 1, "RGBA": 2, "LA": 3, "P": 4, "1": 5}

FLAG_ALPHA = 1
FLAG_PALETTE = 2
FLAG_CHECKERBOARD = 4  # y in checkerboard order (anchors, then the rest); versions 2 and 3
_KNOWN_FLAGS = FLAG_ALPHA | FLAG_PALETTE | FLAG_CHECKERBOARD
CONTEXTS = ("serial", "checkerboard")


@dataclass
class Header:
    config: str
    quality: int
    metric: str
    weights_hash: bytes
    width: int
    height: int
    mode: str
    version: int = VERSION
    context: str = "serial"  # the entropy model's context, which fixes the order of y
    scale_shift: int = 0  # version 3: shifts the scale thresholds (docs/format.md); else 0

    def model_identity(self) -> str:
        return f"{self.config} q{self.quality} {self.metric}, weights {self.weights_hash.hex()}"


@dataclass
class Container:
    header: Header
    y: bytes
    z: bytes
    alpha: bytes | None = None  # PNG of the alpha plane, stored losslessly
    palette: bytes | None = None  # RGB triplets of a palette image
    extra: dict = field(default_factory=dict)


def pack(c: Container) -> bytes:
    h = c.header
    name = h.config.encode("ascii")
    if not 1 <= len(name) <= 255:
        raise ValueError(f"config name {h.config!r} must be 1..255 ASCII bytes")
    if len(h.weights_hash) != HASH_BYTES:
        raise ValueError("weights hash must be 16 bytes")
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise ValueError(f"image size {h.width}x{h.height} outside 1..{MAX_SIDE}")
    if h.context not in CONTEXTS or (h.context != "serial" and h.version < 2):
        raise ValueError(f"context {h.context!r} cannot be written in format {h.version}")
    flags = (FLAG_ALPHA if c.alpha is not None else 0) | (FLAG_PALETTE if c.palette is not None else 0)
    flags |= FLAG_CHECKERBOARD if h.context == "checkerboard" else 0
    out = bytearray(MAGIC)
    if h.version not in READABLE_VERSIONS:
        raise ValueError(f"cannot write format version {h.version}")
    if not (-128 <= h.scale_shift <= 127) or (h.scale_shift and h.version < 3):
        raise ValueError(f"scale shift {h.scale_shift} cannot be written in format {h.version}")
    out += struct.pack("<BBBB", h.version, flags, MODE_CODES[h.mode], len(name))
    out += name
    out += struct.pack("<BB", h.quality, METRIC_CODES[h.metric])
    out += h.weights_hash
    out += struct.pack("<HH", h.width, h.height)
    if h.version >= 3:
        out += struct.pack("<b", h.scale_shift)
    payloads = [c.y, c.z] + [p for p in (c.alpha, c.palette) if p is not None]
    out += struct.pack(f"<{len(payloads)}I", *(len(p) for p in payloads))
    for p in payloads:
        out += p
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"file is truncated (in the {what})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def unpack(data: bytes) -> Container:
    """Parse and validate a whole .ainn file."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FormatError("not an .ainn file (bad magic bytes)")
    r = _Reader(data)
    r.take(len(MAGIC), "magic")
    version, flags, mode_code, name_len = r.unpack("<BBBB", "header")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise FormatError(f"unsupported .ainn format version {version} (this ainn_fast reads versions {readable})")
    # The checksum comes first so that damage anywhere reads as damage, not as some
    # misleading field error.
    if len(data) < 4 or zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise FormatError("file is corrupt or truncated (checksum mismatch)")
    if flags & ~_KNOWN_FLAGS or (version < 2 and flags & FLAG_CHECKERBOARD):
        raise FormatError(f"unknown header flags 0x{flags:02x}")
    modes = {v: k for k, v in MODE_CODES.items()}
    if mode_code not in modes:
        raise FormatError(f"unknown image mode code {mode_code}")
    try:
        config = r.take(name_len, "config name").decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("config name is not ASCII") from None
    quality, metric_code = r.unpack("<BB", "header")
    metrics = {v: k for k, v in METRIC_CODES.items()}
    if metric_code not in metrics:
        raise FormatError(f"unknown metric code {metric_code}")
    if not 1 <= quality <= 8:
        raise FormatError(f"quality {quality} outside 1..8")
    weights_hash = r.take(HASH_BYTES, "weights hash")
    width, height = r.unpack("<HH", "header")
    if width == 0 or height == 0:
        raise FormatError(f"image size {width}x{height} is empty")
    (scale_shift,) = r.unpack("<b", "header") if version >= 3 else (0,)
    count = 2 + bool(flags & FLAG_ALPHA) + bool(flags & FLAG_PALETTE)
    lengths = r.unpack(f"<{count}I", "payload lengths")
    if r.pos + sum(lengths) + 4 != len(data):
        raise FormatError(
            f"payload lengths ({sum(lengths)} bytes) disagree with the file size ({len(data)} bytes)"
        )
    payloads = [r.take(n, "payload") for n in lengths]
    context = "checkerboard" if flags & FLAG_CHECKERBOARD else "serial"
    header = Header(
        config, quality, metrics[metric_code], weights_hash, width, height, modes[mode_code], version, context, scale_shift
    )
    c = Container(header, payloads[0], payloads[1])
    rest = payloads[2:]
    if flags & FLAG_ALPHA:
        c.alpha = rest.pop(0)
    if flags & FLAG_PALETTE:
        c.palette = rest.pop(0)
        if len(c.palette) % 3 or not 3 <= len(c.palette) <= 768:
            raise FormatError(f"palette of {len(c.palette)} bytes is not 1..256 RGB entries")
    return c
