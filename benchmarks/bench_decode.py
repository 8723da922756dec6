"""Decoding one image, all cases in one run on one machine (CPU, or the GPU when present).

Latents (lite configuration with its shipped weights, astronaut photo scaled to 768x512
and 256x256): ``wavefront`` (format 4, the product path: row streams decoded by the
native step kernel on the device), ``wavefront_host_rans`` (the same file through
CompressAI's decoder on the host and the torch parameter ops), ``wavefront_format3`` (one
stream), ``serial_reference`` (the int64 loop, one position at a time), ``serial_v1``
(format 1's float raster loop, the CompressAI structure with trimmed CDF tables) and
``compressai_mbt2018`` (CompressAI's own serial decompress of its N = M = 192 joint
model, untrained weights: timing only).

rANS coding alone (768x512): format 4's 16 row streams of that photo's symbols, coded by
``native_rans_encode`` and by CompressAI's encoder one stream at a time (the same bytes).

Synthesis (768x512): the eager model against ``prepare_for_decoding`` in float32 and
bfloat16, contiguous and channels_last.

    python -m pytest benchmarks/bench_decode.py --benchmark-json benchmarks/results/decode_cpu_$(date +%F).json
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ainn_fast import bench, codec, container, entropy_coding

torch.set_num_threads(int(os.environ.get("AINN_BENCH_THREADS", 1)))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = {"768x512": (768, 512), "256x256": (256, 256)}


@pytest.fixture(scope="module")
def lite():
    return codec.prepare_model(codec.default_model(3), DEVICE)


def _run(benchmark, fn, rounds: int):
    def call():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    return benchmark.pedantic(call, rounds=rounds, warmup_rounds=1 if rounds > 1 else 0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "decoder", ["wavefront", "wavefront_host_rans", "wavefront_format3", "serial_reference", "serial_v1", "compressai_mbt2018"]
)
def test_decode_latents(benchmark, lite, size, decoder):
    benchmark.group = f"decode latents {size}"
    image = bench.photo(*SIZES[size])
    if decoder == "compressai_mbt2018":
        from compressai.zoo import mbt2018

        model = mbt2018(4, pretrained=False).eval()
        model.update(force=True)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float().div(255)
        out = model.to(DEVICE).compress(x.to(DEVICE))
        _run(benchmark, lambda: model.decompress(out["strings"], out["shape"]), rounds=1)
        return
    version = {"serial_v1": 1, "wavefront_format3": 3}.get(decoder, container.VERSION)
    c = container.unpack(codec.encode(image, lite, device=DEVICE, version=version)[0])
    latent = codec.latent_size(c.header)
    shifts = [c.y_shift()]
    wavefront = lambda native=None: entropy_coding.decode_latents(  # noqa: E731
        lite, [c.y_streams()], [c.z], [latent], DEVICE, scale_shifts=shifts, native=native
    )
    fn = {
        "wavefront": wavefront,
        "wavefront_host_rans": lambda: wavefront(native=False),
        "wavefront_format3": wavefront,
        "serial_reference": lambda: entropy_coding.decode_latents_serial(lite, c.y_streams(), c.z, latent, c.y_shift()),
        "serial_v1": lambda: entropy_coding.decode_latents_v1(lite, c.y, c.z, latent),
    }[decoder]
    _run(benchmark, fn, rounds=5 if decoder.startswith("wavefront") else 1)


@pytest.mark.parametrize("coder", ["native", "compressai"])
def test_rans_encode(benchmark, lite, coder):
    from ainn_fast import row_streams
    from ainn_fast.fixed_point import fixed_point

    benchmark.group = "rANS coding of y, 768x512, 16 row streams"
    with torch.no_grad():
        x = bench.photo(768, 512)
        y = lite.g_a(torch.from_numpy(np.asarray(x).copy()).permute(2, 0, 1)[None].float().div(255).to(DEVICE))
    _, _, ((q, scale),) = entropy_coding.quantize_latents(lite, y)
    fp = fixed_point(lite, DEVICE)
    index = fp.scale_index(scale, 0).view(-1, fp.M)
    rows = entropy_coding._schedule(fp, [tuple(y.shape[-2:])], "serial").rows_in_order(0)
    count = row_streams.default_streams(*y.shape[-2:])
    native = coder == "native"
    if native and not row_streams.native_available(DEVICE):
        pytest.skip("native extension unavailable")
    streams = _run(benchmark, lambda: row_streams.encode(lite, q.view(-1, fp.M), index, rows, count, native), rounds=5)
    assert streams == row_streams.encode(lite, q.view(-1, fp.M), index, rows, count, native=not native)


# The synthesis g_s of one 768x512 image as decoding runs it (prepare_for_decoding), by
# layout and precision: "eager" is the unprepared model (no folding, no caches).
SYNTHESIS = {
    "eager": None,
    "prepared_fp32_contiguous": dict(channels_last=False),
    "prepared_fp32_channels_last": dict(channels_last=True),
    "prepared_bf16_contiguous": dict(channels_last=False, precision="bf16"),
    "prepared_bf16_channels_last": dict(channels_last=True, precision="bf16"),
}


@pytest.mark.parametrize("variant", SYNTHESIS)
def test_synthesis(benchmark, variant):
    from ainn_fast.inference import prepare_for_decoding

    benchmark.group = "synthesis 768x512"
    model = codec.prepare_model(codec.default_model(3), DEVICE)
    image = bench.photo(768, 512)
    c = container.unpack(codec.compress(image, model, device=DEVICE))
    (y_hat,) = entropy_coding.decode_latents(
        model, [c.y_streams()], [c.z], [codec.latent_size(c.header)], DEVICE, scale_shifts=[c.y_shift()]
    )
    if SYNTHESIS[variant] is not None:
        prepare_for_decoding(model, **SYNTHESIS[variant])
    with torch.no_grad():
        _run(benchmark, lambda: model.g_s(y_hat), rounds=3)
