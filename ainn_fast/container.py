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
VERSION = 4  # 4: as 3, with y dealt to several rANS streams by latent row (row_streams.py)
# 3: as 2, plus the image's scale shift (the encoder's choice of scale thresholds);
# 2: fixed-point entropy parameters, wavefront symbol order; 1: float parameters, raster
# order (decodes on the device that made it)
READABLE_VERSIONS = (1, 2, 3, 4)
MAX_SIDE = 65535
HASH_BYTES = 16

METRIC_CODES = {"mse": 0, "ms-ssim": 1}
# The mode the decoder returns: the input's own mode for these.
MODE_CODES = {"L": 0, "RGB": 1, "RGBA": 2, "LA": 3, "P": 4, "1": 5}

FLAG_ALPHA = 1
FLAG_PALETTE = 2
FLAG_CHECKERBOARD = 4  # y in checkerboard order (anchors, then the rest); versions 2 to 4
FLAG_CHANNEL_SHIFTS = 8  # a payload of per-channel scale shifts follows z; versions 3 and 4
_KNOWN_FLAGS = FLAG_ALPHA | FLAG_PALETTE | FLAG_CHECKERBOARD | FLAG_CHANNEL_SHIFTS
MAX_CHANNEL_DELTA = 255
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
    scale_shift: int = 0  # versions 3 and 4: shifts the scale thresholds (docs/format.md); else 0

    def model_identity(self) -> str:
        return f"{self.config} q{self.quality} {self.metric}, weights {self.weights_hash.hex()}"


@dataclass
class Container:
    header: Header
    y: bytes
    z: bytes
    alpha: bytes | None = None  # PNG of the alpha plane, stored losslessly
    palette: bytes | None = None  # RGB triplets of a palette image
    channel_shifts: tuple[int, ...] | None = None  # versions 3, 4: per-channel deltas from the scale shift
    extra: dict = field(default_factory=dict)

    def y_streams(self) -> list[bytes]:
        """y's rANS streams: format 4's row streams, else the one stream."""
        if self.header.version >= 4:
            from . import row_streams  # container stays importable without compressai's coder

            return row_streams.unpack(self.y)
        return [self.y]

    def y_shift(self) -> int | tuple[int, ...]:
        """The scale shift that codes y: one for all channels, or one per channel."""
        if self.channel_shifts is None:
            return self.header.scale_shift
        return tuple(self.header.scale_shift + d for d in self.channel_shifts)


def _zigzag(delta: int) -> int:
    return 2 * abs(delta) - (delta > 0)  # 0, 1, -1, 2, -2, ... -> 0, 1, 2, 3, 4, ...


def delta_bits(delta: int) -> int:
    """Length of one channel shift delta's code in :func:`pack_deltas`."""
    return 2 * (_zigzag(delta) + 1).bit_length() - 1


def pack_deltas(deltas: tuple[int, ...]) -> bytes:
    """Signed exp-Golomb codes (0, 1, -1, 2, -2, ... as 0, 1, 2, 3, 4, ...; a value v
    written as bit_length(v + 1) - 1 zeros, then v + 1 in binary), most significant bit
    first, zero-padded to a byte."""
    bits = []
    for d in deltas:
        if abs(d) > MAX_CHANNEL_DELTA:
            raise ValueError(f"channel shift delta {d} outside -{MAX_CHANNEL_DELTA}..{MAX_CHANNEL_DELTA}")
        v = _zigzag(d) + 1
        bits.append("0" * (v.bit_length() - 1) + format(v, "b"))
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def unpack_deltas(data: bytes) -> tuple[int, ...]:
    """Invert :func:`pack_deltas`: codes until only zero padding (< 8 bits) is left."""
    text = "".join(format(byte, "08b") for byte in data)
    deltas, pos = [], 0
    while (one := text.find("1", pos)) >= 0:
        n = one - pos + 1
        if n > (2 * MAX_CHANNEL_DELTA + 1).bit_length() or one + n > len(text):
            raise FormatError("channel shift payload is malformed")
        v = int(text[one : one + n], 2) - 1
        deltas.append((v + 1) // 2 if v % 2 else -(v // 2))
        pos = one + n
    if len(text) - pos >= 8:
        raise FormatError("channel shift payload has a whole byte of padding")
    return tuple(deltas)


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
    flags |= FLAG_CHANNEL_SHIFTS if c.channel_shifts is not None else 0
    if c.channel_shifts is not None and h.version < 3:
        raise ValueError(f"channel shifts cannot be written in format {h.version}")
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
    shifts = pack_deltas(c.channel_shifts) if c.channel_shifts is not None else None
    payloads = [c.y, c.z] + [p for p in (shifts, c.alpha, c.palette) if p is not None]
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
    if flags & ~_KNOWN_FLAGS or (version < 2 and flags & FLAG_CHECKERBOARD) or (version < 3 and flags & FLAG_CHANNEL_SHIFTS):
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
    count = 2 + bool(flags & FLAG_CHANNEL_SHIFTS) + bool(flags & FLAG_ALPHA) + bool(flags & FLAG_PALETTE)
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
    if flags & FLAG_CHANNEL_SHIFTS:
        c.channel_shifts = unpack_deltas(rest.pop(0))
    if flags & FLAG_ALPHA:
        c.alpha = rest.pop(0)
    if flags & FLAG_PALETTE:
        c.palette = rest.pop(0)
        if len(c.palette) % 3 or not 3 <= len(c.palette) <= 768:
            raise FormatError(f"palette of {len(c.palette)} bytes is not 1..256 RGB entries")
    return c
