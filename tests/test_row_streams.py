"""Format 4's row streams: the payload framing, the native rANS decoding step against
CompressAI's decoder, and row-stream files against the serial reference."""

import numpy as np
import pytest
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from skimage import data

from ainn_fast import codec, container, entropy_coding, row_streams
from ainn_fast.checkpoint import with_context
from ainn_fast.errors import FormatError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
native = pytest.mark.skipif(not row_streams.native_available(torch.device("cpu")), reason="native extension unavailable")


@pytest.fixture(scope="module")
def lite():
    return codec.prepare_model(codec.default_model(3))


def test_payload_framing_round_trips_and_refuses_damage():
    streams = [bytes(range(8)), bytes(4 * 300), bytes(range(12)) * 2]
    payload = row_streams.pack(streams)
    # K, the varint word counts minus two (0, then 298 = two bytes), then the streams.
    assert payload[:4] == bytes([3, 0, 298 & 0x7F | 0x80, 298 >> 7])
    assert row_streams.unpack(payload) == streams
    assert row_streams.unpack(row_streams.pack(streams[:1])) == streams[:1]
    # A word more or less in the last stream frames fine (the file's CRC-32 catches it).
    for bad in (b"", bytes([0]) + bytes(8), payload[:-1], payload[:-20], bytes([2, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])):
        with pytest.raises(FormatError):
            row_streams.unpack(bad)
    with pytest.raises(ValueError):
        row_streams.pack([bytes(6)])


def _random_streams(model, rows_per_stream, channels, seed):
    """Streams of random symbols (a tenth of them far outside their row: bypass codes)
    coded by CompressAI, with each stream's table rows."""
    gen = torch.Generator().manual_seed(seed)
    cdfs, lengths, offsets = row_streams.host_tables(model)
    tables = len(cdfs)
    out = []
    for rows in rows_per_stream:
        index = torch.randint(0, tables, (rows, channels), generator=gen)
        spread = torch.tensor(lengths)[index] // 2
        q = torch.round(torch.randn(rows, channels, generator=gen) * spread.float() / 3).long()
        wild = torch.rand(rows, channels, generator=gen) < 0.1
        q[wild] = torch.randint(-5000, 5000, (int(wild.sum()),), generator=gen)
        enc = BufferedRansEncoder()
        enc.encode_with_indexes(q.flatten().tolist(), index.flatten().tolist(), cdfs, lengths, offsets)
        out.append((enc.flush(), q, index))
    return out


def _interleave(streams, steps):
    """Steps of rows: each step takes the next row of every stream still holding one, in a
    shuffled order, plus a padding row (-1)."""
    gen = torch.Generator().manual_seed(5)
    taken = [0] * len(streams)
    for _ in range(steps):
        rows = [s for s, (_, q, _) in enumerate(streams) if taken[s] < len(q)]
        rows = [rows[k] for k in torch.randperm(len(rows), generator=gen).tolist()] + [-1]
        index = torch.stack([streams[s][2][taken[s]] if s >= 0 else streams[0][2][0] for s in rows])
        want = torch.stack([streams[s][1][taken[s]] if s >= 0 else torch.zeros_like(streams[0][1][0]) for s in rows])
        for s in rows:
            if s >= 0:
                taken[s] += 1
        yield index, torch.tensor(rows), want


@native
@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_native_decoder_equals_compressai_over_steps(lite, dtype):
    streams = _random_streams(lite, [5, 1, 7, 3], lite.M, seed=1)
    tables = row_streams.host_tables(lite)
    reference = row_streams.CompressAIDecoders([s for s, _, _ in streams], [q.numel() for _, q, _ in streams], tables)
    fast = row_streams.device_decoders(lite, [s for s, _, _ in streams], torch.device("cpu"))
    for index, ids, want in _interleave(streams, 7):
        got = fast.decode(index, ids, dtype)
        assert got.dtype == dtype and torch.equal(got.long(), want)
        assert torch.equal(reference.decode(index, ids, torch.int64), want)
    # Every stream consumed exactly its words: the next word is its end.
    assert torch.equal(fast.state[:, 1], fast.state[:, 2])


@pytest.mark.parametrize("count, channels", [(70, 16), (4, 300)])
def test_emulated_cuda_kernel_equals_compressai(lite, emu, count, channels):
    # The .cu launcher and kernel themselves, run on the host (tests/test_cuda_emulation.py):
    # a block per stream, its threads preparing the table rows 128 channels at a time.
    streams = _random_streams(lite, ([3, 1, 2] * 24)[:count], channels, seed=4)
    t = row_streams.DeviceTables(lite, torch.device("cpu"))
    held = row_streams.NativeDecoders([s for s, _, _ in streams], t)  # its words and states, on the CPU
    for index, ids, want in _interleave(streams, 3):
        got = emu.native_rans_decode(held.state, held.words, ids, index, t.cdf, t.cdf_length, t.offset, torch.int64)
        assert torch.equal(got, want)
    assert torch.equal(held.state[:, 1], held.state[:, 2])


@native
def test_native_decoder_survives_garbage(lite):
    # No file reaches this with damage (CRC-32), but a forged one must not crash or hang.
    gen = np.random.default_rng(3)
    garbage = [gen.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (8, 64, 4000)]
    decoders = row_streams.device_decoders(lite, garbage, torch.device("cpu"))
    index = torch.randint(-3, 70, (6, lite.M))  # out-of-range table rows are clamped
    got = decoders.decode(index, torch.tensor([0, 1, 2, 2, 1, 0]), torch.float64)
    assert got.shape == (6, lite.M) and torch.isfinite(got).all()


def test_native_decoder_checks_its_arguments(lite):
    if not row_streams.native_available(torch.device("cpu")):
        pytest.skip("native extension unavailable")
    t = row_streams.DeviceTables(lite, torch.device("cpu"))
    state = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(RuntimeError, match="row_stream"):
        torch.ops.ainn_fast.native_rans_decode(
            state, torch.zeros(4, dtype=torch.int32), torch.zeros(3, dtype=torch.long),
            torch.zeros(2, lite.M, dtype=torch.long), t.cdf, t.cdf_length, t.offset, torch.float64,
        )


def _latents(model, size=(192, 128)):
    x = torch.from_numpy(data.astronaut()[: size[1], : size[0]].copy()).permute(2, 0, 1).float().div(255)
    with torch.no_grad():
        return model.g_a(torch.stack([x, x.flip(-1)]))


@pytest.mark.parametrize("count", [1, 3, None, 20])
def test_row_streams_decode_like_one_stream(lite, count):
    y = _latents(lite)  # latents 8 x 12: the default is 4 streams; 20 leaves some empty
    one, zs, y_hat, shifts = entropy_coding.encode_latents(lite, y)
    many, zs_many, y_many, shifts_many = entropy_coding.encode_latents(lite, y, streams=count)
    assert zs == zs_many and shifts == shifts_many and torch.equal(y_hat, y_many)
    split = [row_streams.unpack(p) for p in many]
    assert [len(s) for s in split] == [count or row_streams.default_streams(8, 12)] * 2
    if count == 1:  # K = 1 is format 3's stream behind a one-byte count
        assert [s[0] for s in split] == one
    sizes = [(8, 12)] * 2
    for native_decoder in (False, True) if row_streams.native_available(torch.device("cpu")) else (False,):
        got = entropy_coding.decode_latents(lite, split, zs, sizes, scale_shifts=shifts, native=native_decoder)
        for b in range(2):
            assert torch.equal(got[b][0], y_hat[b])
    serial = entropy_coding.decode_latents_serial(lite, split[1], zs[1], (8, 12), shifts[1])
    assert torch.equal(serial[0], y_hat[1])


def test_checkerboard_row_streams_decode(lite):
    board = codec.prepare_model(with_context(lite, "checkerboard"))
    y = _latents(board)
    many, zs, y_hat, shifts = entropy_coding.encode_latents(board, y, streams=None)
    got = entropy_coding.decode_latents(board, [row_streams.unpack(p) for p in many], zs, [(8, 12)] * 2, scale_shifts=shifts)
    assert all(torch.equal(got[b][0], y_hat[b]) for b in range(2))


def test_format_4_file_equals_serial_reference_and_costs_little(lite):
    img = data.chelsea()[:256, :384]
    blob, y_enc = codec.encode(img, lite)
    c = container.unpack(blob)
    assert c.header.version == 4 and len(c.y_streams()) == row_streams.default_streams(16, 24)
    serial = entropy_coding.decode_latents_serial(lite, c.y_streams(), c.z, codec.latent_size(c.header), c.y_shift())
    assert torch.equal(serial, y_enc) and torch.equal(codec.decode(blob, lite)[1], y_enc)
    v3 = codec.encode(img, lite, version=3)[0]
    assert container.unpack(v3).header.version == 3
    # Eight streams' flushes, alignment and lengths: a few bytes each.
    assert 0 < len(blob) - len(v3) <= 12 * (len(c.y_streams()) - 1) + 1


@cuda
def test_cuda_decoder_equals_compressai(lite):
    streams = _random_streams(lite, [4, 2, 6], lite.M, seed=2)
    fast = row_streams.device_decoders(lite, [s for s, _, _ in streams], torch.device("cuda"))
    for index, ids, want in _interleave(streams, 6):
        got = fast.decode(index.cuda(), ids.cuda(), torch.float64)
        assert got.is_cuda and torch.equal(got.cpu().long(), want)


def test_damaged_stream_framing_is_a_format_error(lite):
    blob, _ = codec.encode(data.coffee()[:64, :128], lite)
    c = container.unpack(blob)
    c.y = bytes([c.y[0]]) + b"\xff" * 6 + c.y[7:]  # lengths past the payload, under a valid CRC
    with pytest.raises(FormatError, match="stream lengths"):
        codec.decode(container.pack(c), lite)


def _step_case(model, rows_per_stream, seed, channels=None):
    """Streams whose symbols were coded with the table rows that integer scales pick
    (searchsorted over each channel's thresholds), with means: what a decoding step gets.
    ``channels`` (default M): more repeat the model's channels' thresholds, fewer drop some."""
    from ainn_fast.fixed_point import FixedPointEntropy

    fp = FixedPointEntropy(model, "cpu", torch.float64)
    gen = torch.Generator().manual_seed(seed)
    channels = channels or fp.M
    widen = -(-channels // fp.M)
    shifts = tuple(torch.randint(-6, 7, (fp.M,), generator=gen).tolist())
    thresholds = fp.channel_thresholds(shifts).repeat(widen, 1)[:channels].contiguous()
    cdfs, lengths, offsets = row_streams.host_tables(model)
    cases = []
    for rows in rows_per_stream:
        scale = torch.randint(0, 300 * 4096, (rows, widen * fp.M), generator=gen).double()
        mean = torch.randint(-40 * 4096, 40 * 4096, (rows, channels), generator=gen).double()
        index = fp.scale_index(scale.view(rows, widen, fp.M), shifts).reshape(rows, -1)[:, :channels]
        scale = scale[:, :channels]
        q = torch.round(torch.randn(rows, channels, generator=gen) * scale / 4096).long()
        enc = BufferedRansEncoder()
        enc.encode_with_indexes(q.flatten().tolist(), index.flatten().tolist(), cdfs, lengths, offsets)
        cases.append((enc.flush(), torch.cat((scale, mean), 1), q))
    return thresholds, cases


def _check_steps(model, step_op, thresholds, cases, state, words):
    """Run the decoding step op over three steps of rows interleaved across the streams;
    each row's y_hat integer must be clamp(q * 4096 + mean) in its own output row (on the
    device of ``state``)."""
    from ainn_fast.fixed_point import ACT_MAX, UNIT

    device = state.device
    t = row_streams.DeviceTables(model, device)
    channels = thresholds.shape[0]
    thresholds = thresholds.to(device)
    y_rows = torch.zeros(1 + sum(len(q) for _, _, q in cases), channels, dtype=torch.float64, device=device)
    taken, out_row = [0] * len(cases), 0
    for _ in range(3):
        ids = [s for s in range(len(cases)) if taken[s] < len(cases[s][2])][::-1] + [-1]
        gaussian = torch.stack([cases[s][1][taken[s]] if s >= 0 else cases[0][1][0] for s in ids])
        write = torch.arange(out_row, out_row + len(ids))
        write[-1] = len(y_rows) - 1  # the padding row: never written
        step_op(state, words, torch.tensor(ids, device=device), gaussian.to(device), thresholds, t.cdf, t.cdf_length,
                t.offset, y_rows, write.to(device), float(UNIT), float(ACT_MAX))
        for r, s in enumerate(ids[:-1]):
            want = (cases[s][2][taken[s]] * UNIT + cases[s][1][taken[s], channels:]).clamp(-ACT_MAX, ACT_MAX)
            assert torch.equal(y_rows[write[r]].cpu(), want)
            taken[s] += 1
        out_row += len(ids) - 1
    assert not y_rows[-1].any()


@native
def test_decoding_step_picks_rows_decodes_and_writes(lite):
    thresholds, cases = _step_case(lite, [3, 1, 2], seed=6)
    held = row_streams.NativeDecoders([s for s, _, _ in cases], row_streams.DeviceTables(lite, torch.device("cpu")))
    _check_steps(lite, torch.ops.ainn_fast.native_rans_decode_step, thresholds, cases, held.state, held.words)


@pytest.mark.parametrize("streams, channels", [(67, None), (5, 300), (4, 20)])
def test_emulated_cuda_decoding_step(lite, emu, streams, channels):
    # One block per stream, its threads preparing the table rows 128 channels at a time:
    # M = 128 (one chunk), 300 (two and a short one), 20 (fewer than the block's threads).
    thresholds, cases = _step_case(lite, ([2, 3, 1] * 23)[:streams], seed=7, channels=channels)
    held = row_streams.NativeDecoders([s for s, _, _ in cases], row_streams.DeviceTables(lite, torch.device("cpu")))
    _check_steps(lite, emu.native_rans_decode_step, thresholds, cases, held.state, held.words)
    if channels:  # the CPU kernel, on the same widths
        again = row_streams.NativeDecoders([s for s, _, _ in cases], row_streams.DeviceTables(lite, torch.device("cpu")))
        if row_streams.native_available(torch.device("cpu")):
            _check_steps(lite, torch.ops.ainn_fast.native_rans_decode_step, thresholds, cases, again.state, again.words)


@cuda
@pytest.mark.parametrize("channels", [None, 300])
def test_cuda_decoding_step(lite, channels):
    thresholds, cases = _step_case(lite, [2, 3, 1] * 23, seed=9, channels=channels)
    held = row_streams.NativeDecoders([s for s, _, _ in cases], row_streams.DeviceTables(lite, torch.device("cuda")))
    _check_steps(lite, torch.ops.ainn_fast.native_rans_decode_step, thresholds, cases, held.state, held.words)


def _encode_case(model, seed):
    """Symbols for 5 streams (one of them empty) of a 9 x M latent, a tenth of them far
    outside their rows (bypass codes), with the rows they sit in."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(row_streams.host_tables(model)[0]), (9 * 3, model.M), generator=gen)
    q = torch.round(torch.randn(index.shape, generator=gen) * 4).long()
    wild = torch.rand(index.shape, generator=gen) < 0.1
    q[wild] = torch.randint(-30000, 30000, (int(wild.sum()),), generator=gen)
    rows = torch.arange(9).repeat_interleave(3)  # rows 0..8, three positions each
    return q, index, rows


@pytest.mark.parametrize("count", [1, 4, 11])  # 11 > 9 rows: two empty streams
def test_native_encoder_writes_compressai_bytes(lite, count):
    if not row_streams.native_available(torch.device("cpu")):
        pytest.skip("native extension unavailable")
    q, index, rows = _encode_case(lite, seed=8)
    want = row_streams.encode(lite, q, index, rows, count, native=False)
    assert row_streams.encode(lite, q.double(), index, rows, count, native=True) == want
    assert len(want) == count and all(len(s) >= 8 for s in want)


def test_emulated_cuda_encoder_writes_compressai_bytes(lite, emu, monkeypatch):
    q, index, rows = _encode_case(lite, seed=9)
    want = row_streams.encode(lite, q, index, rows, 4, native=False)
    monkeypatch.setattr(torch.ops.ainn_fast, "native_rans_encode", emu.native_rans_encode, raising=False)
    assert row_streams.encode(lite, q, index, rows, 4, native=True) == want


@cuda
def test_cuda_encoder_writes_compressai_bytes(lite):
    import copy

    q, index, rows = _encode_case(lite, seed=10)
    want = row_streams.encode(lite, q, index, rows, 4, native=False)
    gpu = copy.deepcopy(lite).cuda()
    assert row_streams.encode(gpu, q.cuda(), index.cuda(), rows, 4, native=True) == want


def test_entropy_path_choice(monkeypatch):
    # AINN_ENTROPY_PATH, else the device's default; less what the native kernels here allow.
    monkeypatch.delenv("AINN_ENTROPY_PATH", raising=False)
    has_native = row_streams.native_available(torch.device("cpu"))
    assert entropy_coding.entropy_path("cpu") == ("device" if has_native else "compressai")
    monkeypatch.setattr(row_streams, "native_available", lambda device: True)
    assert entropy_coding.entropy_path("cuda") == entropy_coding.GPU_ENTROPY_PATH == "host"
    monkeypatch.setenv("AINN_ENTROPY_PATH", "fused")
    assert entropy_coding.entropy_path("cuda") == "fused"
    with entropy_coding.use_entropy_path("device"):
        assert entropy_coding.entropy_path("cuda") == "device"
    assert entropy_coding.entropy_path("cuda") == "fused"
    # No CUDA kernels: the native decoder on the host; no native kernels at all: CompressAI's.
    monkeypatch.setattr(row_streams, "native_available", lambda device: device.type == "cpu")
    assert entropy_coding.entropy_path("cuda") == "host"
    monkeypatch.setattr(row_streams, "native_available", lambda device: False)
    assert entropy_coding.entropy_path("cuda") == entropy_coding.entropy_path("cpu") == "compressai"
    monkeypatch.setenv("AINN_ENTROPY_PATH", "gpu")
    with pytest.raises(ValueError, match="AINN_ENTROPY_PATH='gpu'"):
        entropy_coding.entropy_path("cpu")
    with pytest.raises(ValueError, match="unknown entropy path"):
        with entropy_coding.use_entropy_path("fast"):
            pass


@native
def test_every_entropy_path_codes_the_same_file(lite, monkeypatch):
    # The same bytes encoded, the same latents decoded, whichever path; and each path
    # really takes its decoder (CompressAI's on the host, or the native one).
    monkeypatch.delenv("AINN_ENTROPY_PATH", raising=False)
    img = data.chelsea()[:128, :192]
    blob, y_enc = codec.encode(img, lite)
    made = []
    for cls in (row_streams.CompressAIDecoders, row_streams.NativeDecoders, row_streams.HostDecoders):
        init = cls.__dict__["__init__"]
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init, _cls=cls: (
            made.append(_cls.__name__) if type(self) is _cls else None) or _init(self, *a))
    encode_native = row_streams._encode_native
    monkeypatch.setattr(row_streams, "_encode_native", lambda *a: made.append("native encoder") or encode_native(*a))
    for name in entropy_coding.ENTROPY_PATHS:
        made.clear()
        with entropy_coding.use_entropy_path(name):
            assert codec.encode(img, lite)[0] == blob
            assert torch.equal(codec.decode(blob, lite)[1], y_enc)
        want = {"compressai": ["CompressAIDecoders"], "host": ["native encoder", "HostDecoders"]}
        assert made == want.get(name, ["native encoder", "NativeDecoders"])
