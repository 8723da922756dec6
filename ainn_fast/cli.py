"""The ``ainn`` command: compress, decompress, info, demo.

Exit codes: 0 success; 2 bad input, bad file or bad arguments (one line on stderr, no
traceback unless --debug); 1 an internal error. Outputs are written atomically (a
temporary file renamed into place) and never overwrite an existing file without --force.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from . import allocator
from .errors import AinnError, InputError

OUTPUT_FORMATS = {".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse would print usage too)
        raise AinnError(f"{message} (see ainn {self.prog.split()[-1]} --help)" if " " in self.prog else message)


def _precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
        help="synthesis precision (default fp32; bf16: image within 0.1 dB, faster on GPUs and on many CPUs; "
        "the command times one convolution and warns where it would be slower)",
    )  # fmt: skip


def _int_in(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse type: an integer low..high (high None: no bound), refused in one line
    (``choices=range(...)`` would print every choice)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"{low}..{high}"
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    return parse


def _refine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refine", type=_int_in(0, None, "a number of steps"), default=0, metavar="STEPS",
        help="optimise the latent for this image for STEPS gradient steps before coding: smaller files at "
        "the same quality, an ordinary file for any decoder, a slower encoder (about 1.3 s a step for "
        "512x512 on 2 Zen 4 cores, 1.9 s with --refine-precision fp32; 30 is a good choice; default 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--refine-precision", default="auto", choices=["auto", "fp32", "bf16"],
        help="precision of the refinement steps' synthesis (default auto: bf16 where this machine runs it "
        "faster, 1.5x on a Zen 4 CPU with the same gains; the file is chosen in fp32 either way)",
    )  # fmt: skip


def _streams_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--streams", type=_int_in(0, 255, "a stream count"), metavar="0..255",
        help="rANS streams for y, dealt by latent row, so that a decoder (GPU or CPU) decodes a front's positions "
        "in parallel; about 7.5 bytes each (default: the rows a front spans, ceil(width / 48), at most "
        "ceil(height / 16); 0: one stream, format 3, the smallest file)",
    )  # fmt: skip


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ainn", description="A-INN learned image compression")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, model_options: bool = True) -> None:
        sp.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
        if model_options:
            sp.add_argument("--checkpoint", help="model weights (.safetensors) instead of the default model")

    c = sub.add_parser("compress", help="image -> .ainn")
    c.add_argument("input")
    c.add_argument("-o", "--output", help="output file (default: INPUT with suffix .ainn)")
    c.add_argument("-q", "--quality", type=int, choices=range(1, 9), metavar="1..8", help="quality (default 3)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    _streams_option(c)
    _refine_option(c)
    common(c)

    d = sub.add_parser("decompress", help=".ainn -> image")
    d.add_argument("input")
    d.add_argument("-o", "--output", help="output image, .png/.webp/.tif/.bmp (default: INPUT with suffix .png)")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    _precision_option(d)
    common(d)

    i = sub.add_parser("info", help="what an .ainn header says")
    i.add_argument("input")
    i.add_argument("--debug", action="store_true", help="show tracebacks")

    m = sub.add_parser("demo", help="compress and decompress a real photo, print size, bpp, PSNR, time")
    m.add_argument("input", nargs="?", help="image (default: scikit-image's astronaut photo)")
    m.add_argument("-o", "--output", default="ainn-demo", help="folder for the .ainn and .png (default ainn-demo)")
    m.add_argument("-q", "--quality", type=int, choices=range(1, 9), metavar="1..8", help="quality (default 3)")
    m.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    _streams_option(m)
    _refine_option(m)
    _precision_option(m)
    common(m)

    e = sub.add_parser("eval", help="RD curves of ainn_fast and JPEG/WebP/AVIF/JPEG XL on folders of images")
    e.add_argument("dirs", nargs="+", metavar="DIR", help="folders of images (PNG, JPEG, ...)")
    e.add_argument("-o", "--output", required=True, help="folder for the JSON results, bd_rate.json and rd.png")
    e.add_argument("--checkpoint", nargs="+", help="model weights, one RD point each (default: the default model)")
    e.add_argument("-q", "--quality", type=int, nargs="+", choices=range(1, 9), metavar="1..8",
                   help="qualities of the default model (default 1 3 6)")  # fmt: skip
    e.add_argument("--baselines", help="comma-separated: jpeg,webp,avif,jxl or none (default: all available)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    _streams_option(e)
    _refine_option(e)
    common(e, model_options=False)
    t = sub.add_parser("train", help="train a model on folders of images (torchrun for several processes)")
    t.add_argument("train_dirs", nargs="+", metavar="DIR", help="folders of training images (any format, any size)")
    t.add_argument("-o", "--output", required=True, help="folder for checkpoints and log.jsonl (resumes from it)")
    t.add_argument("--val", nargs="*", default=[], metavar="DIR", help="held-out validation folders")
    t.add_argument("--config", default="lite", choices=["paper", "lite", "tiny"],
                   help="model sizes (default lite; with --init it must be the checkpoint's)")  # fmt: skip
    t.add_argument("-q", "--quality", type=int, default=3, choices=range(1, 9), metavar="1..8")
    t.add_argument("--metric", default="mse", choices=["mse", "ms-ssim"])
    t.add_argument("--steps", type=int, default=100_000)
    t.add_argument("--batch-size", type=int, default=8, help="per process")
    t.add_argument("--patch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--aux-lr", type=float, default=1e-3)
    t.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: off)")
    t.add_argument("--milestones", type=int, nargs="*", default=[], help="steps where the rate drops 10x")
    t.add_argument("--amp", default="none", choices=["none", "bf16"])
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC tensors and weights (default on: 1.18x a CPU step, 1.25x an H200 step)")  # fmt: skip
    t.add_argument("--backend", default="auto", choices=["auto", "reference", "triton", "native"])
    t.add_argument("--val-every", type=int, default=1000)
    t.add_argument("--ckpt-every", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", dest="init_checkpoint", help="start from these weights (fine-tuning)")
    t.add_argument("--context", default="serial", choices=["serial", "checkerboard"],
                   help="entropy model context (default serial, the paper's)")  # fmt: skip
    t.add_argument("--cfrm-layers", type=int, help="dense layers of the feature recovery (default: the config's); "
                   "with --init, grows the model's to this many, starting as the same model")  # fmt: skip
    t.add_argument("--quantization", default="noise", choices=["noise", "mixed"],
                   help="training proxy for rounding: noise everywhere, or mixed: noise for the rate and the "
                        "rounded latent (straight-through): round(y) for the context, round(y - mean) + mean for "
                        "the decoder, as a file's decoder has (default noise)")
    t.add_argument("--context-passes", type=int, default=1,
                   help="with --quantization mixed: run the context model this many times, each fed the "
                        "previous pass's round(y - mean) + mean, closer to what a file's context sees (default 1)")
    t.add_argument("--cuda-graphs", action="store_true",
                   help="replay each step from one CUDA graph after 3 eager ones: less host time a step "
                        "(--device cuda, one process; falls back to eager steps, with a warning, where capture fails)")
    t.add_argument("--no-resume", action="store_true", help="refuse to continue a run found in --output")
    common(t, model_options=False)

    b = sub.add_parser("bench", help="encode/decode time per image vs the serial decoders and CompressAI, one run")
    b.add_argument("--configs", nargs="+", default=["lite"], choices=["lite", "paper", "tiny"], help="(default lite)")
    b.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the test photo (default 768x512)")
    b.add_argument("--repeat", type=int, default=3, help="timed runs per measurement, median reported")
    b.add_argument("--no-serial", action="store_true", help="skip the (slow) serial decoders")
    b.add_argument("--no-baseline", action="store_true", help="skip CompressAI's mbt2018")
    b.add_argument("--cuda-graphs", action="store_true", help="replay the synthesis and the latent decode's context steps from CUDA graphs (GPU)")
    _precision_option(b)

    b.add_argument("--contexts", nargs="+", default=["serial"], choices=["serial", "checkerboard"],
                   help="entropy contexts to time (checkerboard: shipped weights, context not fine-tuned)")  # fmt: skip
    _streams_option(b)
    b.add_argument("-o", "--output", help="write the results as JSON")
    b.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    common(b, model_options=False)
    return p


def _check_output(path: str, force: bool) -> Path:
    out = Path(path)
    if out.exists() and not force:
        raise InputError(f"{path} exists (use --force to overwrite)")
    if out.is_dir():
        raise InputError(f"{path} is a directory")
    if not out.parent.exists():
        raise InputError(f"folder {str(out.parent)!r} does not exist")
    return out


def _write_atomic(out: Path, write: Callable[[io.BufferedWriter], None], force: bool) -> None:
    """Write to a temporary file beside ``out``, then move it into place in one step."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)  # fails instead of replacing a file that appeared meanwhile
            except FileExistsError:
                raise InputError(f"{out} exists (use --force to overwrite)") from None
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _model(args):
    if getattr(args, "checkpoint", None):
        from .checkpoint import load_model

        return load_model(args.checkpoint)
    return None


def _device(name: str):
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


def _progress(label: str, unit: str = "front"):
    from tqdm import tqdm

    return lambda rows: tqdm(rows, desc=label, unit=unit, leave=False, disable=None)


def _compress(args, input_path: str, output: Path) -> tuple[bytes, float, object]:
    from . import codec
    from .image_io import open_image
    from .inference import prepare_for_decoding

    device = _device(args.device)
    img = open_image(input_path)
    model = _model(args) or codec.default_model(args.quality or codec.DEFAULT_QUALITY)
    model = codec.prepare_model(model, device)
    prepare_for_decoding(model)  # g_a (and --refine's g_s) in the layout they run fastest in
    start = time.perf_counter()
    steps = _progress("refine", "step") if args.refine else None
    data, _ = codec.encode(
        img, model, args.quality, device, _progress("compress"), refine=args.refine, refine_progress=steps,
        streams=args.streams, refine_precision=args.refine_precision,
    )
    seconds = time.perf_counter() - start
    _write_atomic(output, lambda f: f.write(data), args.force)
    return data, seconds, img


def cmd_compress(args: argparse.Namespace) -> None:
    output = _check_output(args.output or str(Path(args.input).with_suffix(".ainn")), args.force)
    data, seconds, img = _compress(args, args.input, output)
    w, h = img.size
    print(f"{output}: {len(data)} bytes, {8 * len(data) / (w * h):.4f} bpp, {w}x{h}, {seconds:.2f} s")


def _decompress(args, data: bytes, output: Path):
    from . import codec

    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise InputError(f"unknown output format {output.suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    from . import container

    device = _device(args.device)
    model = _model(args)
    if model is not None:
        model = codec.prepare_model(model, device)
    model = codec.resolve_model(container.unpack(data).header, model, device)  # not timed: loading
    from .inference import prepare_for_decoding

    # Folded BatchNorm, cached inverses (the model is not saved after this).
    prepare_for_decoding(model, precision=getattr(args, "precision", "fp32"))
    start = time.perf_counter()
    img, _ = codec.decode(data, model, device, _progress("decompress"))
    seconds = time.perf_counter() - start
    options = {"lossless": True} if fmt == "WEBP" else {}
    _write_atomic(output, lambda f: img.save(f, format=fmt, **options), args.force)
    return img, seconds


def cmd_decompress(args: argparse.Namespace) -> None:
    output = _check_output(args.output or str(Path(args.input).with_suffix(".png")), args.force)
    from .image_io import read_bytes

    img, seconds = _decompress(args, read_bytes(args.input), output)
    print(f"{output}: {img.size[0]}x{img.size[1]} {img.mode}, {seconds:.2f} s")


def cmd_info(args: argparse.Namespace) -> None:
    from . import container
    from .image_io import read_bytes

    data = read_bytes(args.input)
    c = container.unpack(data)
    h = c.header
    print(f"file:     {args.input} ({len(data)} bytes)")
    order = "float parameters, raster order" if h.version == 1 else f"fixed-point parameters, {h.context} context"
    order += f", scale shift {h.scale_shift:+d}" if h.version >= 3 else ""
    if c.channel_shifts is not None:
        order += f" per channel ({sum(d != 0 for d in c.channel_shifts)} of {len(c.channel_shifts)} differ)"
    print(f"format:   .ainn version {h.version} ({order})")
    print(f"model:    {h.config} quality {h.quality} {h.metric}, weights {h.weights_hash.hex()}")
    print(f"image:    {h.width}x{h.height} {h.mode}")
    extras = "".join(f", {n} {len(p)} B" for n, p in (("alpha", c.alpha), ("palette", c.palette)) if p is not None)
    streams = f" in {len(c.y_streams())} row streams" if h.version >= 4 else ""
    print(f"payloads: y {len(c.y)} B{streams}, z {len(c.z)} B{extras}")
    print(f"bpp:      {8 * len(data) / (h.width * h.height):.4f}")


def cmd_demo(args: argparse.Namespace) -> None:
    import numpy as np

    if args.input is None:
        try:
            from skimage import data as skdata
        except ImportError:
            raise InputError("no image given and scikit-image is not installed for its astronaut photo") from None
        folder = Path(skdata.__file__).parent
        source = str(folder / "astronaut.png")
    else:
        source = args.input
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem
    ainn_path = _check_output(str(out_dir / f"{stem}.ainn"), args.force)
    png_path = _check_output(str(out_dir / f"{stem}.png"), args.force)
    data, enc_s, original = _compress(args, source, ainn_path)
    decoded, dec_s = _decompress(args, data, png_path)
    a = np.asarray(original.convert("RGB"), dtype=np.float64)
    b = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    w, h = original.size
    print(f"image:      {source} ({w}x{h})")
    print(f"compressed: {ainn_path} {len(data)} bytes, {8 * len(data) / (w * h):.4f} bpp")
    print(f"decoded:    {png_path}, PSNR {psnr:.2f} dB")
    print(f"time:       compress {enc_s:.2f} s, decompress {dec_s:.2f} s ({args.device})")


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import run_command

    run_command(args)


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import run_command

    run_command(args)


def cmd_train(args: argparse.Namespace) -> None:
    from .training import TrainConfig, train

    _device(args.device.split(":")[0] if args.device.startswith("cuda") else args.device)
    out = Path(args.output)
    if args.no_resume and (out / "last.safetensors").exists():
        raise InputError(f"{out} holds a run already (drop --no-resume to continue it)")
    cfg = TrainConfig(
        train_dirs=args.train_dirs, out_dir=args.output, val_dirs=args.val, config=args.config,
        quality=args.quality, metric=args.metric, patch_size=args.patch_size, batch_size=args.batch_size,
        steps=args.steps, lr=args.lr, aux_lr=args.aux_lr, clip=args.clip, milestones=args.milestones,
        amp=args.amp, channels_last=args.channels_last, backend=args.backend, val_every=args.val_every,
        ckpt_every=args.ckpt_every, seed=args.seed, device=args.device, init_checkpoint=args.init_checkpoint,
        context=args.context, cfrm_layers=args.cfrm_layers, quantization=args.quantization,
        context_passes=args.context_passes, cuda_graphs=args.cuda_graphs,
    )
    trainer = train(cfg)
    if trainer.rank == 0:
        print(f"{out / 'last.safetensors'}: step {trainer.step}")
        if (out / "best.safetensors").exists():
            print(f"{out / 'best.safetensors'}: lowest validation loss, {trainer.best_val_loss:.4f}")


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "demo": cmd_demo, "eval": cmd_eval, "train": cmd_train,
            "bench": cmd_bench}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ainn: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():  # restores the caller's filters (tests call main in-process)
        # CompressAI imports torch_geometric, whose import calls the deprecated
        # torch.jit.script: two lines on every command that are no concern of the user's.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        warnings.showwarning = _warning_line  # one line, like the errors
        return _main(argv)


def script_main() -> int:
    """The ``ainn`` console script (and ``python -m ainn_fast.cli``): a process of its own,
    so its allocator may keep freed memory for reuse (allocator.py), which main() called
    from a Python program must not impose on it."""
    allocator.reuse_freed_memory()
    return main()


def _check_environment() -> None:
    """Refuse a bad AINN_BACKEND or AINN_ENTROPY_PATH before a command writes anything."""
    from . import backend, entropy_coding

    backend.get_backend()
    entropy_coding.entropy_path("cpu")


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _build_parser().parse_args(argv)
        _check_environment()
        COMMANDS[args.command](args)
        return 0
    except AinnError as e:
        if debug:
            traceback.print_exc()
        print(f"ainn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ainn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: say so, keep it to one line
        if debug:
            traceback.print_exc()
        print(f"ainn: internal error: {type(e).__name__}: {e} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(script_main())
