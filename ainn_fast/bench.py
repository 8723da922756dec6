"""``ainn bench``: encode and decode time per image, with the serial decoders measured in
the same run on the same machine (ratios are only meaningful that way).

Rows per configuration: end-to-end encode (image -> file bytes) and decode (file bytes ->
image), the decode's two parts (wavefront latent decode, synthesis), and the serial loops
it replaces: format 1's float raster loop (CompressAI's structure, our trimmed tables) and
the int64 serial reference of formats 2 to 4; and the latent decode and the encode on
every entropy path of the device (entropy_coding.ENTROPY_PATHS: CompressAI's coder on the
host, the native rANS kernels on the host or the device, and on a GPU the fused
parameter kernels too). CompressAI's own mbt2018 (N = M = 192, the same
joint hyperprior + 5x5 context model, untrained weights: timing only) is measured on the
same image as the outside baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from . import codec, container, entropy_coding, zoo
from .checkpoint import with_context
from .inference import prepare_for_decoding, uses_front_graphs
from .models import STRIDE

def photo(width: int, height: int) -> Image.Image:
    """scikit-image's astronaut photo, scaled and centre-cropped to width x height."""
    from skimage import data

    return ImageOps.fit(Image.fromarray(data.astronaut()), (width, height), Image.Resampling.LANCZOS)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device, repeat: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs, and its result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _model(config: str, context: str, device: torch.device):
    """The default model of ``config``; another context gets its weights carried over
    (not fine-tuned: for timing only)."""
    trained = any(c == config for c, _, _ in zoo.pretrained_available())
    model = codec.default_model(codec.DEFAULT_QUALITY, config=config)
    if context != model.config.context:
        model, trained = with_context(model, context), False
    return codec.prepare_model(model, device), trained


def peak_bytes_per_pixel(fn: Callable, device: torch.device, width: int, height: int) -> float | None:
    """Peak GPU memory ``fn()`` allocates above what was allocated before it, per padded
    pixel: what codec.GPU_BYTES_PER_PIXEL estimates (None on a CPU, where only the whole
    process's peak is known)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / codec.padded_pixels(width, height)


def bench_config(
    config: str,
    image: Image.Image,
    device: torch.device,
    repeat: int,
    serial: bool = True,
    cuda_graphs: bool = False,
    context: str = "serial",
    precision: str = "fp32",
    streams: int | None = None,
) -> dict:
    model, trained = _model(config, context, device)
    compress = lambda: codec.encode(image, model, device=device, streams=streams)[0]  # noqa: E731
    w, h = image.size
    encode_s, data = timed(compress, device, repeat)
    prepare_for_decoding(model, cuda_graphs=cuda_graphs, precision=precision)
    decode_s, _ = timed(lambda: codec.decode(data, model, device), device, repeat)
    graphed = {}
    if uses_front_graphs(model):  # the encoder's context steps from graphs too
        graphed["encode_graphed_s"], again = timed(compress, device, repeat)
        graphed["encode_graphed_same_bytes"] = again == data
    c = container.unpack(data)
    latent = codec.latent_size(c.header)
    shifts = [c.y_shift()]

    def latents():
        return entropy_coding.decode_latents(model, [c.y_streams()], [c.z], [latent], device, scale_shifts=shifts,
                                             padded_fronts=cuda_graphs)

    latent_s, y_hat = timed(latents, device, repeat)
    # Every entropy path this device has, in the same run: decode latents and encode.
    by_path: dict[str, dict] = {"decode_latents_s": {}, "encode_s": {}}
    for name in entropy_paths(device):
        with entropy_coding.use_entropy_path(name):
            by_path["decode_latents_s"][name], got = timed(latents, device, repeat)
            by_path["encode_s"][name], again = timed(compress, device, repeat)
        if again != data or not torch.equal(got[0], y_hat[0]):
            raise RuntimeError(f"entropy path {name!r} coded differently")  # never: every path is exact
    with torch.no_grad():
        synth_s, _ = timed(lambda: model.g_s(y_hat[0]), device, repeat)
    peaks = {
        "encode_peak_bytes_per_pixel": peak_bytes_per_pixel(compress, device, w, h),
        "decode_peak_bytes_per_pixel": peak_bytes_per_pixel(lambda: codec.decode(data, model, device), device, w, h),
    }
    row = {
        "config": config,
        "context": context,
        "synthesis_precision": precision,
        "trained_weights": trained,
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": len(data),
        "format": c.header.version,
        "y_streams": len(c.y_streams()),
        "one_stream_bytes": len(codec.encode(image, model, device=device, streams=0)[0]),
        "bpp": 8 * len(data) / (w * h),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "decode_latents_s": latent_s,
        "synthesis_s": synth_s,
        "entropy_path": entropy_coding.entropy_path(device),
        "by_entropy_path": by_path,
        **graphed,
        **{k: v for k, v in peaks.items() if v is not None},
    }
    if serial and context == "serial":
        old = codec.encode(image, model, device=device, version=1)[0]
        o = container.unpack(old)
        row["v1_bytes"] = len(old)
        row["serial_v1_decode_latents_s"], _ = timed(
            lambda: entropy_coding.decode_latents_v1(model, o.y, o.z, latent), device, 1, warmup=0
        )
        row["serial_reference_decode_latents_s"], _ = timed(
            lambda: entropy_coding.decode_latents_serial(model, c.y_streams(), c.z, latent, c.y_shift()), device, 1, warmup=0
        )
    return row


def entropy_paths(device: torch.device) -> list[str]:
    """The entropy paths (entropy_coding.ENTROPY_PATHS) that run, and differ, on ``device``:
    those entropy_path keeps as asked (its fallbacks drop the others), "fused" on CUDA only
    (elsewhere it runs as "device")."""
    kept = []
    for name in entropy_coding.ENTROPY_PATHS:
        with entropy_coding.use_entropy_path(name):
            if entropy_coding.entropy_path(device) == name and (name != "fused" or device.type == "cuda"):
                kept.append(name)
    return kept


def bench_compressai(image: Image.Image, device: torch.device) -> dict:
    """CompressAI's mbt2018 (quality 4: N = M = 192), serial compress and decompress."""
    from compressai.zoo import mbt2018

    torch.manual_seed(0)
    model = mbt2018(4, pretrained=False).eval()
    model.update(force=True)
    model.to(device)
    x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, -w % STRIDE, 0, -h % STRIDE)).to(device)
    with torch.no_grad():
        encode_s, out = timed(lambda: model.compress(x), device, 1, warmup=0)
        decode_s, _ = timed(lambda: model.decompress(out["strings"], out["shape"]), device, 1, warmup=0)
    return {"model": "compressai mbt2018 q4 (N=M=192), untrained", "encode_s": encode_s, "decode_s": decode_s}


def machine(device: torch.device) -> dict:
    info = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(
    configs: list[str], width: int, height: int, device: torch.device, repeat: int, serial: bool, baseline: bool,
    cuda_graphs: bool = False,
    contexts: tuple[str, ...] = ("serial",),
    precision: str = "fp32",
    streams: int | None = None,
) -> dict:
    image = photo(width, height)
    results = {"machine": machine(device), "image": f"astronaut {width}x{height}", "configs": []}
    for config in configs:
        for context in contexts:
            row = bench_config(config, image, device, repeat, serial, cuda_graphs, context, precision, streams)
            results["configs"].append(row)
    if baseline:
        results["compressai"] = bench_compressai(image, device)
    return results


def report(results: dict) -> str:
    m = results["machine"]
    lines = [f"{results['image']} on {m.get('gpu', m['cpu'])} ({m['device']}, {m['torch_threads']} threads)"]
    base = results.get("compressai")
    for r in results["configs"]:
        lines.append(
            f"{r['config'] + ('' if r['context'] == 'serial' else ' ' + r['context']):>6}: {r['bytes']} B ({r['bpp']:.3f} bpp), encode {r['encode_s'] * 1e3:.0f} ms, "
            f"decode {r['decode_s'] * 1e3:.0f} ms = latents {r['decode_latents_s'] * 1e3:.0f} + synthesis "
            f"{r['synthesis_s'] * 1e3:.0f} ms"
        )
        if "y_streams" in r:
            lines.append(
                f"        y in {r['y_streams']} row streams: {r['bytes'] - r['one_stream_bytes']:+d} B "
                f"({100 * (r['bytes'] / r['one_stream_bytes'] - 1):+.2f} %) against one stream"
            )
        if "by_entropy_path" in r:
            paths = r["by_entropy_path"]
            lines.append(
                f"        entropy paths (default {r['entropy_path']}): latents "
                + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in paths["decode_latents_s"].items())
                + " ms; encode " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in paths["encode_s"].items()) + " ms"
            )
        if "encode_graphed_s" in r:
            lines.append(
                f"        encode with the context steps from CUDA graphs {r['encode_graphed_s'] * 1e3:.0f} ms"
                f" ({'the same bytes' if r['encode_graphed_same_bytes'] else 'DIFFERENT BYTES'})"
            )
        if "serial_v1_decode_latents_s" in r:
            lines.append(
                f"        serial loops: float v1 {r['serial_v1_decode_latents_s'] * 1e3:.0f} ms "
                f"({r['serial_v1_decode_latents_s'] / r['decode_latents_s']:.1f}x the wavefront), int64 reference "
                f"{r['serial_reference_decode_latents_s'] * 1e3:.0f} ms; v1 file {r['v1_bytes']} B "
                f"(format {r.get('format', 2)} {100 * (r['bytes'] / r['v1_bytes'] - 1):+.2f} %)"
            )
        if "decode_peak_bytes_per_pixel" in r:
            lines.append(
                f"        peak GPU memory a padded pixel: encode {r['encode_peak_bytes_per_pixel']:.0f} B, "
                f"decode {r['decode_peak_bytes_per_pixel']:.0f} B"
            )
        if base:
            lines.append(f"        CompressAI mbt2018 decode / this decode: {base['decode_s'] / r['decode_s']:.1f}x")
    if base:
        lines.append(f"CompressAI mbt2018: encode {base['encode_s']:.2f} s, decode {base['decode_s']:.2f} s")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> None:
    from .cli import _check_output, _device, _write_atomic

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        from .errors import InputError

        raise InputError(f"--size must be WIDTHxHEIGHT, got {args.size!r}") from None
    out = _check_output(args.output, args.force) if args.output else None
    device = _device(args.device)
    results = run(
        args.configs, width, height, device, args.repeat, not args.no_serial, not args.no_baseline, args.cuda_graphs,
        tuple(args.contexts), args.precision, args.streams,
    )
    print(report(results))
    if out is not None:
        _write_atomic(out, lambda f: f.write(json.dumps(results, indent=2).encode()), args.force)
