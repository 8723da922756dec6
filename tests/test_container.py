"""The .ainn container: layout as documented, and a fuzz loop of damaged files."""

import random
import struct
import zlib

import pytest
from PIL import Image
from skimage import data

from ainn_fast import codec, container
from ainn_fast.errors import AinnError, FormatError


@pytest.fixture(scope="module")
def sample(tiny_codec_model) -> bytes:
    img = Image.fromarray(data.coffee()[:20, :30])
    rgba = img.copy()
    rgba.putalpha(200)
    return codec.compress(rgba, tiny_codec_model)


@pytest.fixture(scope="module")
def sample_v2(tiny_codec_model) -> bytes:
    return codec.encode(Image.fromarray(data.coffee()[:20, :30]), tiny_codec_model, version=2)[0]


def test_layout_matches_docs(sample):
    assert sample[:4] == b"AINN" and sample[4] == container.VERSION
    flags, mode, n = sample[5], sample[6], sample[7]
    assert flags == container.FLAG_ALPHA and mode == container.MODE_CODES["RGBA"]
    assert sample[8 : 8 + n] == b"tiny"
    quality, metric = sample[8 + n], sample[9 + n]
    assert (quality, metric) == (3, 0)
    width, height = struct.unpack("<HH", sample[26 + n : 30 + n])
    assert (width, height) == (30, 20)
    (shift,) = struct.unpack("<b", sample[30 + n : 31 + n])
    lengths = struct.unpack("<3I", sample[31 + n : 43 + n])
    assert 43 + n + sum(lengths) + 4 == len(sample)
    assert struct.unpack("<I", sample[-4:])[0] == zlib.crc32(sample[:-4])
    c = container.unpack(sample)
    assert (len(c.y), len(c.z), len(c.alpha)) == lengths and c.header.scale_shift == shift
    assert container.pack(c) == sample


def test_scale_shift_is_a_signed_byte_of_version_3_only(sample, sample_v2):
    c = container.unpack(sample)
    for shift in (-128, -7, 0, 9, 127):
        c.header.scale_shift = shift
        assert container.unpack(container.pack(c)).header.scale_shift == shift
    for bad in (-129, 128):
        c.header.scale_shift = bad
        with pytest.raises(ValueError, match="scale shift"):
            container.pack(c)
    # Format 2 has no shift byte: its payload lengths follow the height directly.
    old = container.unpack(sample_v2)
    n = sample_v2[7]
    assert sample_v2[4] == 2 and old.header.scale_shift == 0
    assert struct.unpack("<2I", sample_v2[30 + n : 38 + n]) == (len(old.y), len(old.z))
    old.header.scale_shift = 1
    with pytest.raises(ValueError, match="scale shift 1 cannot be written in format 2"):
        container.pack(old)


def test_errors_name_the_problem(sample):
    with pytest.raises(FormatError, match="bad magic"):
        container.unpack(b"PNG\x00" + sample[4:])
    with pytest.raises(FormatError, match="version 9"):
        container.unpack(sample[:4] + b"\x09" + sample[5:])
    with pytest.raises(FormatError, match="checksum"):
        container.unpack(sample[:-1] + bytes([sample[-1] ^ 1]))
    with pytest.raises(FormatError, match="checksum|truncated"):
        container.unpack(sample[:-10])
    with pytest.raises(FormatError):
        container.unpack(b"")


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_forged_header_fields_are_refused(sample):
    body = bytearray(sample[:-4])
    n = body[7]
    for offset, value, message in [
        (5, 0x80, "flags"),
        (6, 42, "mode"),
        (8 + n, 9, "quality"),
        (9 + n, 7, "metric"),
    ]:
        forged = bytearray(body)
        forged[offset] = value
        with pytest.raises(FormatError, match=message):
            container.unpack(_with_crc(bytes(forged)))
    forged = bytearray(body)
    forged[31 + n : 35 + n] = struct.pack("<I", 2**32 - 1)  # y length far beyond the file
    with pytest.raises(FormatError, match="disagree"):
        container.unpack(_with_crc(bytes(forged)))


def test_fuzz_damaged_files_end_in_documented_errors(sample, tiny_codec_model, monkeypatch):
    """Seeded mutation loop: truncations, bit flips, extensions, random files, and header
    mutations with a recomputed checksum (which reach the parser's field checks and the
    decoder). Every case either decodes or raises an AinnError: no other exception, crash
    or hang."""
    # A small memory budget (room for about 100x100 pixels) makes forged large sizes fail
    # at the memory check, before allocating, as they would on a smaller machine.
    monkeypatch.setattr(codec, "_available_bytes", lambda device: 100 * 100 * codec.DECODE_BYTES_PER_PIXEL["tiny"] * 3)
    rng = random.Random(1234)
    outcomes = {"error": 0, "decoded": 0}
    n = sample[7]
    header_end = 43 + n

    def check(blob: bytes, decode: bool = False) -> None:
        try:
            if decode:
                codec.decompress(blob, tiny_codec_model)
            else:
                container.unpack(blob)
            outcomes["decoded"] += 1
        except AinnError:
            outcomes["error"] += 1

    for _ in range(1000):
        check(sample[: rng.randrange(len(sample))])
    for _ in range(1500):
        blob = bytearray(sample)
        for _ in range(rng.randint(1, 3)):
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        check(bytes(blob))
    for _ in range(500):
        check(sample + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
    for _ in range(500):
        prefix = b"AINN\x01" if rng.random() < 0.5 else b""
        check(prefix + bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    assert outcomes["decoded"] == 0  # the checksum catches every accidental change
    for _ in range(60):
        body = bytearray(sample[:-4])
        body[rng.randrange(4, header_end)] = rng.randrange(256)
        check(_with_crc(bytes(body)), decode=True)
    assert outcomes["error"] >= 3500


def test_channel_shift_payload_round_trips_and_rejects_damage(sample, sample_v2):
    rng = random.Random(7)
    for _ in range(300):
        deltas = tuple(rng.choice([0, 0, 0, 1, -1, 2, rng.randint(-255, 255)]) for _ in range(rng.randint(0, 200)))
        assert container.unpack_deltas(container.pack_deltas(deltas)) == deltas
    # 0, 1, -1, 2, -2 as documented: 1 010 011 00100 00101, zero-padded
    assert container.pack_deltas((0, 1, -1, 2, -2)) == bytes([0b10100110, 0b01000010, 0b10000000])
    with pytest.raises(FormatError, match="padding"):
        container.unpack_deltas(b"\x80\x00")
    with pytest.raises(FormatError, match="malformed"):
        container.unpack_deltas(b"\x00\x01")  # a code running past the end
    with pytest.raises(ValueError, match="outside"):
        container.pack_deltas((256,))
    c = container.unpack(sample)
    c.channel_shifts = (0, 3, -2, 0)
    again = container.unpack(container.pack(c))
    assert again.channel_shifts == (0, 3, -2, 0) and again.alpha == c.alpha
    assert again.y_shift() == tuple(c.header.scale_shift + d for d in (0, 3, -2, 0))
    old = container.unpack(sample_v2)
    old.channel_shifts = (1,)
    with pytest.raises(ValueError, match="format 2"):
        container.pack(old)
    body = bytearray(sample_v2[:-4])
    body[5] |= container.FLAG_CHANNEL_SHIFTS  # a version 2 file cannot carry them
    with pytest.raises(FormatError, match="unknown header flags"):
        container.unpack(_with_crc(bytes(body)))


def test_version_and_checkerboard_flag(sample, sample_v2):
    for blob, version in ((sample, container.VERSION), (sample_v2, 2)):
        body = bytearray(blob[:-4])
        body[5] |= container.FLAG_CHECKERBOARD
        c = container.unpack(_with_crc(bytes(body)))
        assert c.header.context == "checkerboard" and c.header.version == version
        assert container.pack(c) == _with_crc(bytes(body))  # the flag survives a round trip
    body[4] = 1  # a version 1 file cannot carry it
    with pytest.raises(FormatError, match="unknown header flags"):
        container.unpack(_with_crc(bytes(body)))
    body[5] &= ~container.FLAG_CHECKERBOARD
    assert container.unpack(_with_crc(bytes(body))).header.version == 1
