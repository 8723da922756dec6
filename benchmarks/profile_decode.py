"""Where a GPU decode (and encode) spends its time: each part of one decode of the astronaut
(768x512, default model of a configuration) timed alone, then the busiest kernels from
torch.profiler. Not a benchmark suite (bench_decode.py is); a tool for finding the next
bottleneck on the GPU host:

    python benchmarks/profile_decode.py [--config paper] [--context checkerboard] [--streams K] [--no-profiler]
"""

from __future__ import annotations

import argparse
import time

import torch

from ainn_fast import bench, codec, container, entropy_coding, image_io, row_streams


def cuda_ms(fn, repeat: int = 20) -> float:
    """Median GPU time of fn() in ms (CUDA events, after one warm-up call); wall time on a CPU."""
    if not torch.cuda.is_available():
        return wall_ms(fn)
    fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wall_ms(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


class WallEvent:
    """torch.cuda.Event's two methods on the host clock (a CPU dry run of the script)."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "WallEvent") -> float:
        return (end.t - self.t) * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="paper")
    p.add_argument("--context", default="serial")
    p.add_argument("--streams", type=int, default=None)
    p.add_argument("--no-profiler", action="store_true")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    dev = torch.device(args.device)
    model, _ = bench._model(args.config, args.context, dev)
    data = codec.encode(bench.photo(768, 512), model, device=dev, streams=args.streams)[0]
    c = container.unpack(data)
    latent, shifts, streams = codec.latent_size(c.header), [c.y_shift()], c.y_streams()
    fp = entropy_coding.fixed_point(model, dev)
    clock = "GPU" if dev.type == "cuda" else "wall"  # what cuda_ms measures here
    print(f"{args.config} {args.context}: {len(data)} B, {len(streams)} streams, latent {latent}, fused {fp.fused}")

    def latents(**kw):
        return entropy_coding.decode_latents(model, [streams], [c.z], [latent], dev, scale_shifts=shifts, **kw)

    for path in bench.entropy_paths(dev):
        with entropy_coding.use_entropy_path(path):
            for padded in (True, False):
                ms = wall_ms(lambda: latents(padded_fronts=padded))
                print(f"  latents, path {path}, {'padded (graphs on a GPU)' if padded else 'eager'}: wall {ms:.1f} ms")

    # The parts, one by one.
    z = entropy_coding._decode_z(model, c.z, latent)
    print(f"  z decode (host): wall {wall_ms(lambda: entropy_coding._decode_z(model, c.z, latent)):.1f} ms")
    print(f"  hyper_params: {cuda_ms(lambda: fp.hyper_params(z)):.2f} ms {clock}")
    schedule = entropy_coding._schedule(fp, [latent], model.config.context)
    params_list = [fp.hyper_params(z)]
    y_pad, params = schedule.buffers(fp, params_list)
    y_flat = y_pad.view(-1, fp.M)
    steps = [s for s in schedule.steps if s[0] is not None]
    biggest = max(steps, key=lambda s: len(s[1]))
    window, at = biggest[0], biggest[1]
    for fused in (True, False):
        ms = cuda_ms(lambda: fp.position_gaussian(y_flat, params, window, at, fused))
        print(f"  entropy params of one front ({len(at)} rows), fused={fused}: {ms:.3f} ms {clock}")
    all_at = torch.cat([s[1] for s in steps])
    all_window = torch.cat([s[0] for s in steps])
    for fused in (True, False):
        ms = cuda_ms(lambda: fp.position_gaussian(y_flat, params, all_window, all_at, fused))
        print(f"  entropy params of all {len(all_at)} positions at once, fused={fused}: {ms:.3f} ms {clock}")
    decoders = row_streams.device_decoders(model, streams, dev)
    print(f"  device_decoders (upload streams, tables): wall {wall_ms(lambda: row_streams.device_decoders(model, streams, dev)):.1f} ms")
    thresholds = fp.channel_thresholds((shifts[0],) * fp.M if not isinstance(shifts[0], tuple) else shifts[0])
    stream_of = schedule.row_streams([len(streams)])
    # Every step eagerly, the parameters and the rANS step timed apart with events.
    Event = (lambda: torch.cuda.Event(enable_timing=True)) if dev.type == "cuda" else WallEvent
    for fused in (True, False) if fp.fused else (False,):
        ev = []
        y_flat.zero_()
        decoders.load(streams)
        sync()
        t0 = time.perf_counter()
        for k, (window, at, write, *_) in enumerate(schedule.steps):
            e = [Event() for _ in range(3)]
            e[0].record()
            gaussian = fp.position_gaussian(y_flat, params, window, at, fused)
            e[1].record()
            decoders.decode_step(gaussian, thresholds, stream_of[k], y_flat, write)
            e[2].record()
            ev.append(e)
        sync()
        wall = (time.perf_counter() - t0) * 1e3
        par = sum(e[0].elapsed_time(e[1]) for e in ev)
        step = sum(e[1].elapsed_time(e[2]) for e in ev)
        print(f"  eager loop of {len(ev)} steps, fused={fused}: wall {wall:.1f} ms; "
              f"{clock}: params {par:.1f} ms, rANS step {step:.1f} ms")
        worst = sorted(((e[1].elapsed_time(e[2]), k) for k, e in enumerate(ev)), reverse=True)[:3]
        print(f"    slowest rANS steps (ms, step): {[(round(t, 3), k) for t, k in worst]}")
    # The encoder's parts: analysis, the coding-order pass, the scale-shift search, rANS.
    image = bench.photo(768, 512)
    x = codec.pad_to_stride(image_io.prepare(image).rgb.to(dev))
    with torch.no_grad():
        y = model.g_a(x)
    print(f"  encode: whole {wall_ms(lambda: codec.encode(image, model, device=dev, streams=args.streams)):.1f} ms "
          f"wall; g_a {cuda_ms(lambda: model.g_a(x)):.1f} ms {clock}")
    for path in bench.entropy_paths(dev):
        with entropy_coding.use_entropy_path(path):
            fused = path == "fused"
            ms = wall_ms(lambda: entropy_coding.quantize_latents(model, y, fused=fused))
            _, _, coded = entropy_coding.quantize_latents(model, y, fused=fused)
            print(f"    path {path}: coding-order pass {ms:.1f} ms wall")
    q, scale = coded[0]
    ms = wall_ms(lambda: entropy_coding.choose_scale_shift(fp, model, q, scale))
    shift = entropy_coding.choose_scale_shift(fp, model, q, scale)
    index = fp.scale_index(scale, shift)
    rows = schedule.rows_in_order(0)
    count = len(streams)
    print(f"    scale-shift search {ms:.1f} ms wall")
    for native in (False, True) if row_streams.native_available(dev) else (False,):
        ms = wall_ms(lambda: row_streams.encode(model, q.view(-1, fp.M), index.view(-1, fp.M), rows, count, native))
        print(f"    rANS encode of {count} streams, {'native on the device' if native else 'CompressAI on the host'}:"
              f" {ms:.1f} ms wall")
    if not args.no_profiler and dev.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        for path in ("fused", "device"):
            with entropy_coding.use_entropy_path(path):
                latents()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    latents()
                    torch.cuda.synchronize()
            print(f"== profiler, path {path}, eager")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
