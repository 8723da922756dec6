"""Formats 2 and 3: the fixed-point entropy parameters are exact, the wavefront decoder
equals the serial reference, alone, in batches, across thread counts and devices, and
format 3's scale shift is chosen well."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import codec, container, entropy_coding, fixed_point, row_streams, zoo
from ainn_fast.checkpoint import with_context
from ainn_fast.inference import prepare_for_decoding
from ainn_fast.fixed_point import ACT_MAX, FixedPointEntropy

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def photo(name: str, size) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).crop((0, 0, *size))


@pytest.fixture(scope="module")
def lite():
    """The shipped default model: trained weights give realistic scales and means."""
    return codec.prepare_model(codec.default_model(3))


def random_state(fp: FixedPointEntropy, height: int, width: int, scale: int, batch: int = 1):
    y_pad = torch.randint(-scale, scale + 1, (batch, height + 4, width + 4, fp.M), dtype=torch.int64)
    params = torch.randint(-scale, scale + 1, (batch * height * width, 2 * fp.M), dtype=torch.int64)
    return y_pad, params


@pytest.mark.parametrize("scale", [40 * 4096, ACT_MAX])  # realistic values, and the clamp bound itself
def test_float64_path_equals_int64_reference_up_to_the_bounds(tiny_codec_model, scale):
    # The claim that makes format 2 portable: float64 sums of these integers are exact.
    exact = FixedPointEntropy(tiny_codec_model, "cpu", torch.int64)
    fast = FixedPointEntropy(tiny_codec_model, "cpu", torch.float64)
    y_pad, params = random_state(exact, 6, 7, scale, batch=2)
    b = torch.tensor([0, 0, 1, 1, 1])
    i = torch.tensor([0, 2, 5, 3, 1])
    j = torch.tensor([0, 6, 3, 2, 4])
    window = exact.window_index(b, i, j, (10, 11))
    at = (b * 6 + i) * 7 + j
    ref = exact.position_params(y_pad.view(-1, exact.M), params, window, at)
    got = fast.position_params(y_pad.view(-1, exact.M).double(), params.double(), window, at)
    for r, g in zip(ref, got):
        assert torch.equal(r, g.to(torch.int64))
    z = torch.randint(-scale // 4096, scale // 4096 + 1, (2, tiny_codec_model.N, 2, 3))
    assert torch.equal(exact.hyper_params(z), fast.hyper_params(z).to(torch.int64))


@pytest.mark.parametrize("context", ["serial", "checkerboard"])
def test_fixed_point_parameters_track_the_float_model(lite, context):
    # Independent of the coder: the float entropy model on the same y_hat, z_hat gives
    # (nearly) the same scales and means; a wrong tap, concat or shift would not.
    from ainn_fast.checkpoint import with_context

    model = codec.prepare_model(with_context(lite, context)) if context != "serial" else lite
    fp = FixedPointEntropy(model, "cpu", torch.int64)
    x = torch.from_numpy(data.astronaut()[:128, :192].copy()).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        y = model.g_a(x)
        z_strings = model.entropy_bottleneck.compress(model.h_a(y))
        z_sym = entropy_coding._z_symbols(model, z_strings, (2, 3))
        z_hat = model.entropy_bottleneck.decompress(z_strings, (2, 3))
        y_hat = torch.round(y * 4) / 4  # on the fixed-point grid
        scales, means = model.entropy_parameters(
            torch.cat((model.h_s(z_hat), model.context_prediction(y_hat)), 1)
        ).chunk(2, 1)
    params = fp.hyper_params(z_sym).view(-1, 2 * model.M)
    y_pad = torch.nn.functional.pad((y_hat * 4096).long().permute(0, 2, 3, 1), (0, 0, 2, 2, 2, 2))
    i, j = torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")
    i, j = i.flatten(), j.flatten()
    b = torch.zeros_like(i)
    window = fp.window_index(b, i, j, (12, 16))
    s_int, m_int = fp.position_params(y_pad.reshape(-1, model.M), params, window, i * 12 + j)
    if context == "checkerboard":  # anchors: no context
        anchor = (i + j) % 2 == 0
        s0, m0 = fp.position_params(y_pad.reshape(-1, model.M), params, None, i * 12 + j)
        s_int = torch.where(anchor[:, None], s0, s_int)
        m_int = torch.where(anchor[:, None], m0, m_int)
    expect_s = scales[0, :, i, j].t()
    expect_m = means[0, :, i, j].t()
    assert (s_int / 4096 - expect_s).abs().max() < 2e-3 * (1 + expect_s.abs().max())
    assert (m_int / 4096 - expect_m).abs().max() < 2e-3 * (1 + expect_m.abs().max())


def test_weight_shift_keeps_every_sum_below_2_pow_53():
    conv = torch.nn.Conv2d(64, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.normal_(std=50.0)  # large weights force a small shift
    layer = fixed_point.quantize_conv(conv)
    row_l1 = layer.weight.abs().sum(dim=(0, 1)).max().item()
    assert row_l1 <= fixed_point.ROW_L1_MAX and row_l1 * ACT_MAX + layer.bias.abs().max().item() < 2**53
    # ... and the shift is the largest that does: one more bit would break the bound.
    wider = torch.round(layer.weight / 2**layer.shift * 2 ** (layer.shift + 1))
    assert wider.abs().sum(dim=(0, 1)).max().item() > fixed_point.ROW_L1_MAX


def test_unsupported_layers_are_refused_by_name(tiny_codec_model):
    import copy

    model = copy.deepcopy(tiny_codec_model)
    model.h_s[1] = torch.nn.GELU()
    with pytest.raises(ValueError, match="GELU"):
        FixedPointEntropy(model)


def test_scale_index_equals_compressai_build_indexes(lite):
    fp = fixed_point.fixed_point(lite)
    table = lite.gaussian_conditional.scale_table.double() * 4096
    # Every threshold, its neighbours, and random values from below the bound to above the table.
    edges = torch.cat([table.floor() + d for d in (-1, 0, 1)])
    scales = torch.cat([edges, torch.randint(-5000, 300 * 4096, (2000,)).double()])
    ours = fp.scale_index(scales)
    theirs = lite.gaussian_conditional.build_indexes((scales / 4096).float())
    # compressai compares float32 scales: compare where float32 holds scale / 4096 exactly.
    exact = (scales / 4096).float().double() * 4096 == scales
    assert exact.sum() > 1000 and torch.equal(ours[exact], theirs[exact].long())


@pytest.mark.parametrize("name, size", [("astronaut", (64, 64)), ("coffee", (130, 70)), ("chelsea", (200, 330))])
def test_wavefront_decode_equals_serial_reference(lite, name, size):
    blob, y_enc = codec.encode(photo(name, size), lite)
    c = container.unpack(blob)
    assert c.header.version == 4
    latent = codec.latent_size(c.header)
    serial = entropy_coding.decode_latents_serial(lite, c.y_streams(), c.z, latent, c.y_shift())
    image, y_wave = codec.decode(blob, lite)
    assert torch.equal(serial, y_wave) and torch.equal(y_wave, y_enc)
    assert y_wave.abs().sum() > 0  # a real latent, not an all-zero one
    with torch.no_grad():
        x_serial = lite.g_s(serial)[:, :, : size[1], : size[0]]
    reference = codec.image_io.restore(x_serial, "RGB", None, None)
    assert np.array_equal(np.asarray(reference), np.asarray(image))


def test_file_decodes_alone_and_inside_a_batch_of_different_images(lite):
    files = [
        codec.compress(photo("coffee", (100, 64)), lite),
        codec.compress(photo("astronaut", (64, 200)), lite),
        codec.compress(photo("rocket", (150, 90)), lite),
    ]
    alone = [codec.decode(f, lite) for f in files]
    batched = codec.decode_batch(files, lite)
    for (img_a, y_a), (img_b, y_b) in zip(alone, batched):
        assert torch.equal(y_a, y_b)
        assert np.array_equal(np.asarray(img_a), np.asarray(img_b))
    # Three latent sizes and more than one scale shift in one wavefront pass.
    assert [y.shape[-2:] for _, y in batched] == [(4, 8), (16, 4), (8, 12)]
    assert len({container.unpack(f).header.scale_shift for f in files}) > 1


def test_batch_encode_equals_single_encodes(lite):
    x = torch.from_numpy(data.astronaut()[:128, :192].copy()).permute(2, 0, 1).float().div(255)
    xs = torch.stack([x, x.flip(-1), x.flip(-2)])
    with torch.no_grad():
        y = lite.g_a(xs)
    strings, zs, y_hat, shifts = entropy_coding.encode_latents(lite, y)
    for b in range(3):
        one = entropy_coding.encode_latents(lite, y[b : b + 1])
        assert one[0][0] == strings[b] and one[1][0] == zs[b] and torch.equal(one[2][0], y_hat[b])
        assert one[3] == [shifts[b]]


def test_file_from_one_thread_count_decodes_with_another(lite):
    img = photo("chelsea", (192, 128))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, y_one = codec.encode(img, lite)
        torch.set_num_threads(2)
        two, y_two = codec.encode(img, lite)
        assert torch.equal(codec.decode(one, lite)[1], y_one)
        torch.set_num_threads(1)
        assert torch.equal(codec.decode(two, lite)[1], y_two)
    finally:
        torch.set_num_threads(threads)


def test_version_1_files_still_decode(tiny_codec_model):
    img = photo("coffee", (70, 64))
    blob, y_enc = codec.encode(img, tiny_codec_model, version=1)
    assert container.unpack(blob).header.version == 1
    out, y_dec = codec.decode(blob, tiny_codec_model)
    assert torch.equal(y_enc, y_dec) and out.size == img.size


def test_fixed_point_rate_cost_is_under_half_a_percent(lite):
    # Same model, float serial (format 1) vs fixed point (format 2): the parameters differ
    # by about 1/4096, which must cost almost nothing. A file's size moves by up to about
    # 20 bytes either way with such differences, so the rate is summed over two whole
    # photos (about 17 kB at q3) rather than judged on one small crop.
    v1 = v2 = 0
    for img in (photo("astronaut", (512, 512)), photo("coffee", (600, 400))):
        v1 += len(codec.encode(img, lite, version=1)[0])
        v2 += len(codec.encode(img, lite, version=2)[0])
    assert abs(v2 - v1) / v1 < 0.005, (v1, v2)


def _three_latents(model):
    """A 128x192 crop of the astronaut, flipped two ways: (x, the batch's latents y)."""
    x = torch.from_numpy(data.astronaut()[:128, :192].copy()).permute(2, 0, 1).float().div(255)
    with torch.no_grad():
        return x, model.g_a(torch.stack([x, x.flip(-1), x.flip(-2)]).to(next(model.parameters()).device))


def _padded_fronts_cases(lite):
    """(y_strings, z_strings, sizes, shifts, y_hat): a batch of three photos with one
    shift (the padded path), one photo with its own, and the checkerboard context."""
    x, y = _three_latents(lite)
    strings, zs, y_hat, shifts = entropy_coding.encode_latents(lite, y, scale_shift=0, streams=None)
    yield lite, [row_streams.unpack(s) for s in strings], zs, [(8, 12)] * 3, shifts, y_hat  # format 4's row streams
    strings, zs, y_hat, shifts = entropy_coding.encode_latents(lite, y[1:2])
    yield lite, strings, zs, [(8, 12)], shifts, y_hat
    board = codec.prepare_model(with_context(lite, "checkerboard"), y.device)
    with torch.no_grad():
        y = board.g_a(x[None].to(y.device))
    strings, zs, y_hat, shifts = entropy_coding.encode_latents(board, y)
    yield board, strings, zs, [(8, 12)], shifts, y_hat


def test_padded_fronts_encode_the_same_bytes(lite):
    _, y = _three_latents(lite)
    plain = entropy_coding.encode_latents(lite, y)
    for again in range(2):  # the second call reuses the first one's buffers
        padded = entropy_coding.encode_latents(lite, y[again:] if again else y, padded_fronts=True)
        want = [plain[0][again:], plain[1][again:], plain[2][again:], plain[3][again:]]
        assert want[0] == padded[0] and want[1] == padded[1] and want[3] == padded[3]
        assert torch.equal(want[2], padded[2])
    again = entropy_coding.encode_latents(lite, y, padded_fronts=True)
    assert again[0] == plain[0] and torch.equal(again[2], plain[2])


def test_padded_fronts_decode_the_same_symbols(lite, monkeypatch):
    # Exact integer arithmetic: padding rows in a step's matmuls change no real row. With
    # the native decoder the serial cases run every front in one device loop (on a GPU,
    # one graph): count those loops.
    from ainn_fast.front_steps import PaddedFronts

    loops = []
    whole = PaddedFronts._decode_loop
    monkeypatch.setattr(PaddedFronts, "_decode_loop", lambda self, *a: loops.append(1) or whole(self, *a))
    for model, strings, zs, sizes, shifts, y_hat in _padded_fronts_cases(lite):
        plain = entropy_coding.decode_latents(model, strings, zs, sizes, scale_shifts=shifts)
        for _ in range(2):  # the second call reuses the first one's buffers
            padded = entropy_coding.decode_latents(model, strings, zs, sizes, scale_shifts=shifts, padded_fronts=True)
            for b, (p, q) in enumerate(zip(plain, padded)):
                assert torch.equal(p, q) and torch.equal(q[0], y_hat[b])
    if row_streams.native_available(torch.device("cpu")):
        assert len(loops) == 4  # two serial cases, two calls each; the checkerboard steps one by one


@cuda
def test_padded_fronts_from_cuda_graphs_decode_the_same_symbols(lite):
    import copy

    gpu = copy.deepcopy(lite).cuda()
    prepared = prepare_for_decoding(copy.deepcopy(gpu), cuda_graphs=True)  # codec takes the graphed paths
    x = torch.from_numpy(data.chelsea()[:128, :192].copy()).permute(2, 0, 1)[None].float().div(255).cuda()
    with torch.no_grad():
        y = gpu.g_a(x)
    for path in entropy_coding.ENTROPY_PATHS:  # host: per-step graphs; device, fused: one graph
        with entropy_coding.use_entropy_path(path):
            for model, strings, zs, sizes, shifts, y_hat in _padded_fronts_cases(gpu):
                graphed = entropy_coding.decode_latents(model, strings, zs, sizes, "cuda", scale_shifts=shifts,
                                                        padded_fronts=True)
                for b, q in enumerate(graphed):
                    assert torch.equal(q[0].cpu(), y_hat[b].cpu())
            blob, y_enc = codec.encode(photo("chelsea", (256, 192)), lite)
            _, y_dec = codec.decode(blob, prepared, device="cuda")
            assert torch.equal(y_dec.cpu(), y_enc)
            graphed = entropy_coding.encode_latents(gpu, y, padded_fronts=True)
            assert graphed[0] == entropy_coding.encode_latents(gpu, y)[0]
            blob, y_enc = codec.encode(photo("chelsea", (256, 192)), prepared, device="cuda")  # graphed encode
            assert torch.equal(codec.decode(blob, lite)[1], y_enc.cpu())  # decodes on the CPU


@cuda
@pytest.mark.parametrize("scale", [40 * 4096, ACT_MAX])
def test_fused_entropy_params_on_gpu_equal_the_torch_ops(lite, scale):
    import copy

    gpu = copy.deepcopy(lite).cuda()
    fp = FixedPointEntropy(gpu, "cuda", torch.float64)
    assert fp.fused, "native_entropy_params has no CUDA kernel here"
    y_pad, params = random_state(fp, 9, 11, scale, batch=2)
    b = torch.tensor([0, 1, 1, 0, 1, 0, 1, 1, 0])
    i, j = torch.tensor([0, 8, 5, 3, 1, 2, 7, 4, 6]), torch.tensor([0, 10, 3, 2, 4, 9, 1, 5, 7])
    window = fp.window_index(b.cuda(), i.cuda(), j.cuda(), (13, 15))
    at = ((b * 9 + i) * 11 + j).cuda()
    y_rows, rows = y_pad.view(-1, fp.M).double().cuda(), params.double().cuda()
    for got, want in zip(fp.position_params(y_rows, rows, window, at), fp.position_params(y_rows, rows, window, at, fused=False)):
        assert torch.equal(got, want)
    # A whole decode: fused parameters and streams decoded on the device, against neither.
    for model, strings, zs, sizes, shifts, y_hat in _padded_fronts_cases(gpu):
        for padded in (False, True):
            new = entropy_coding.decode_latents(model, strings, zs, sizes, "cuda", scale_shifts=shifts,
                                                padded_fronts=padded, native=True, fused=True)
            old = entropy_coding.decode_latents(model, strings, zs, sizes, "cuda", scale_shifts=shifts,
                                                padded_fronts=padded, native=False)
            for b, (p, q) in enumerate(zip(new, old)):
                assert torch.equal(p, q) and torch.equal(p[0].cpu(), y_hat[b].cpu())


@cuda
def test_gpu_and_cpu_decode_each_others_files(lite):
    import copy

    gpu = copy.deepcopy(lite).cuda()
    img = photo("chelsea", (256, 192))
    from_cpu, y_cpu = codec.encode(img, lite)
    for path in entropy_coding.ENTROPY_PATHS:  # each of the GPU's ways to code
        with entropy_coding.use_entropy_path(path):
            from_gpu, y_gpu = codec.encode(img, gpu, device="cuda")
            _, y = codec.decode(from_gpu, lite)
            assert torch.equal(y, y_gpu.cpu())
            _, y = codec.decode(from_cpu, gpu, device="cuda")
            assert torch.equal(y.cpu(), y_cpu)
            batched = codec.decode_batch([from_gpu, from_cpu], gpu, device="cuda")
            assert torch.equal(batched[0][1].cpu(), y_gpu.cpu()) and torch.equal(batched[1][1].cpu(), y_cpu)


@pytest.fixture(scope="module")
def coded_photo(lite):
    """Symbols and integer scales of a real photo (the encoder's pass) for the shift tests."""
    x = torch.from_numpy(data.rocket()[:192, :256].copy()).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        _, _, ((q, scale),) = entropy_coding.quantize_latents(lite, lite.g_a(x))
    return q, scale


def test_shift_cost_estimate_matches_the_coder(lite, coded_photo):
    # The estimate sums the quantized CDFs' own bits, so only the coder's flush and its
    # bypass codes (estimated at 16 bits each) separate it from the stream's real size.
    q, scale = coded_photo
    fp = fixed_point.fixed_point(lite)
    shifts = [-20, -6, 0, 5, 17]
    estimates = entropy_coding.shift_costs(fp, lite, q, scale, shifts)
    for shift, estimate in zip(shifts, estimates.tolist()):
        real = 8 * len(entropy_coding.rans_encode(lite, q, fp.scale_index(scale, shift)))
        assert abs(real - estimate) <= 0.002 * real + 64, (shift, real, estimate)


def test_chosen_shift_gives_the_smallest_stream(lite, coded_photo):
    # Against every shift the encoder may pick, coded for real.
    q, scale = coded_photo
    fp = fixed_point.fixed_point(lite)
    sizes = {
        s: len(entropy_coding.rans_encode(lite, q, fp.scale_index(scale, s)))
        for s in range(-entropy_coding.SHIFT_SEARCH, entropy_coding.SHIFT_SEARCH + 1)
    }
    chosen = entropy_coding.choose_scale_shift(fp, lite, q, scale, per_channel=False)
    assert chosen != 0 and sizes[chosen] < sizes[0]  # this photo's scales are off: a real gain
    assert sizes[chosen] <= min(sizes.values()) + 8, (chosen, sizes[chosen], min(sizes.items(), key=lambda kv: kv[1]))
    # One shift per channel, when picked, must pay for its payload (padded code + length field).
    per_channel = entropy_coding.choose_scale_shift(fp, lite, q, scale)
    assert isinstance(per_channel, tuple) and len(per_channel) == lite.M
    _, deltas = entropy_coding.split_shift(per_channel)
    payload = len(container.pack_deltas(deltas)) + 4
    y_bytes = len(entropy_coding.rans_encode(lite, q, fp.scale_index(scale, per_channel)))
    assert y_bytes + payload < sizes[chosen], (y_bytes, payload, sizes[chosen])


def test_channel_shift_index_equals_one_shift_per_channel(lite, coded_photo):
    q, scale = coded_photo
    fp = fixed_point.fixed_point(lite)
    shifts = tuple((c * 7) % 23 - 11 for c in range(lite.M))
    by_channel = fp.scale_index(scale, shifts).view(-1, lite.M)
    rows = scale.view(-1, lite.M)
    for c in (0, 1, 57, lite.M - 1):
        assert torch.equal(by_channel[:, c], fp.scale_index(rows[:, c], shifts[c]))
    assert torch.equal(fp.scale_index(scale, (3,) * lite.M), fp.scale_index(scale, 3))


def test_per_channel_file_decodes_like_the_serial_reference_alone_and_in_a_batch(lite):
    rocket = photo("rocket", (256, 192))
    blob, y_enc = codec.encode(rocket, lite)
    c = container.unpack(blob)
    assert c.channel_shifts is not None and any(c.channel_shifts)  # this photo takes per-channel shifts
    serial = entropy_coding.decode_latents_serial(lite, c.y_streams(), c.z, codec.latent_size(c.header), c.y_shift())
    others = [codec.compress(photo("astronaut", (64, 128)), lite), codec.compress(photo("coffee", (96, 64)), lite)]
    batched = codec.decode_batch([others[0], blob, others[1]], lite)
    alone = codec.decode(blob, lite)
    assert torch.equal(serial, y_enc) and torch.equal(alone[1], y_enc) and torch.equal(batched[1][1], y_enc)
    assert np.array_equal(np.asarray(alone[0]), np.asarray(batched[1][0]))
    for f, (img, y) in zip(others, (batched[0], batched[2])):
        assert torch.equal(codec.decode(f, lite)[1], y)


def test_channel_shifts_for_another_width_are_refused(lite):
    c = container.unpack(codec.compress(photo("rocket", (256, 192)), lite))
    c.channel_shifts = c.channel_shifts[:-1]
    with pytest.raises(codec.FormatError, match=f"shifts for {lite.M - 1} channels; the model has {lite.M}"):
        codec.decompress(container.pack(c), lite)


def test_shifted_thresholds_move_by_quarter_steps(lite):
    fp = fixed_point.fixed_point(lite)
    assert torch.equal(fp.shifted_thresholds(0), fp.thresholds)
    table = lite.gaussian_conditional.scale_table.double()
    step = (table[1:] / table[:-1]).mean()
    for shift in (-8, -1, 3, 4, 12):
        ratio = fp.shifted_thresholds(shift) / fp.thresholds
        # floor() moves each threshold by under one unit of 1/4096
        assert torch.allclose(ratio, step ** (shift / 4) * torch.ones_like(ratio), rtol=2e-3), shift
    # A positive shift hands a scale a lower (narrower) table row.
    s = torch.tensor([0.5 * 4096, 3.0 * 4096], dtype=torch.float64)
    assert (fp.scale_index(s, 8) < fp.scale_index(s, 0)).all() and (fp.scale_index(s, -8) > fp.scale_index(s, 0)).all()


def test_format_2_files_still_decode(lite):
    img = photo("rocket", (256, 192))
    blob, y_enc = codec.encode(img, lite, version=2)
    new, y_new = codec.encode(img, lite)
    c = container.unpack(blob)
    assert c.header.version == 2 and container.unpack(new).header.scale_shift != 0
    assert torch.equal(y_enc, y_new)  # the same latent: the shift changes only the coding
    out, y_dec = codec.decode(blob, lite)
    assert torch.equal(y_enc, y_dec)
    assert np.array_equal(np.asarray(out), np.asarray(codec.decompress(new, lite)))
    assert len(new) < len(blob)
