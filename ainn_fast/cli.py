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
from pathlib import Path
from typing import Callable, Sequence

from .errors import AinnError, InputError

OUTPUT_FORMATS = {".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print usage too)
        raise AinnError(f"{message} (see ainn {self.prog.split()[-1]} --help)" if " " in self.prog else message)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ainn", description="A-INN learned image compression")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, model_options: bool = True):
        sp.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
        if model_options:
            sp.add_argument("--checkpoint", help="model weights (.safetensors) instead of the default model")

    c = sub.add_parser("compress", help="image -> .ainn")
    c.add_argument("input")
    c.add_argument("-o", "--output", help="output file (default: INPUT with suffix .ainn)")
    c.add_argument("-q", "--quality", type=int, choices=range(1, 9), metavar="1..8", help="quality (default 3)")
    c.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    common(c)

    d = sub.add_parser("decompress", help=".ainn -> image")
    d.add_argument("input")
    d.add_argument("-o", "--output", help="output image, .png/.webp/.tif/.bmp (default: INPUT with suffix .png)")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    common(d)

    i = sub.add_parser("info", help="what an .ainn header says")
    i.add_argument("input")
    i.add_argument("--debug", action="store_true", help="show tracebacks")

    m = sub.add_parser("demo", help="compress and decompress a real photo, print size, bpp, PSNR, time")
    m.add_argument("input", nargs="?", help="image (default: scikit-image's astronaut photo)")
    m.add_argument("-o", "--output", default="ainn-demo", help="folder for the .ainn and .png (default ainn-demo)")
    m.add_argument("-q", "--quality", type=int, choices=range(1, 9), metavar="1..8", help="quality (default 3)")
    m.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    common(m)
    return p


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    data = _read(path)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image format Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: damaged image ({e})") from None


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


def _progress(label: str):
    from tqdm import tqdm

    return lambda rows: tqdm(rows, desc=label, unit="row", leave=False, disable=None)


def _compress(args, input_path: str, output: Path) -> tuple[bytes, float, object]:
    from . import codec

    device = _device(args.device)
    img = _open_image(input_path)
    model = _model(args)
    if model is not None:
        model = codec.prepare_model(model, device)
    if model is None:
        model = codec.prepare_model(codec.default_model(args.quality or codec.DEFAULT_QUALITY), device)
    start = time.perf_counter()
    data, _ = codec.encode(img, model, args.quality, device, _progress("compress"))
    seconds = time.perf_counter() - start
    _write_atomic(output, lambda f: f.write(data), args.force)
    return data, seconds, img


def cmd_compress(args) -> None:
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
    start = time.perf_counter()
    img, _ = codec.decode(data, model, device, _progress("decompress"))
    seconds = time.perf_counter() - start
    options = {"lossless": True} if fmt == "WEBP" else {}
    _write_atomic(output, lambda f: img.save(f, format=fmt, **options), args.force)
    return img, seconds


def cmd_decompress(args) -> None:
    output = _check_output(args.output or str(Path(args.input).with_suffix(".png")), args.force)
    img, seconds = _decompress(args, _read(args.input), output)
    print(f"{output}: {img.size[0]}x{img.size[1]} {img.mode}, {seconds:.2f} s")


def cmd_info(args) -> None:
    from . import container

    data = _read(args.input)
    c = container.unpack(data)
    h = c.header
    print(f"file:     {args.input} ({len(data)} bytes)")
    print(f"format:   .ainn version {container.VERSION}")
    print(f"model:    {h.config} quality {h.quality} {h.metric}, weights {h.weights_hash.hex()}")
    print(f"image:    {h.width}x{h.height} {h.mode}")
    extras = "".join(f", {n} {len(p)} B" for n, p in (("alpha", c.alpha), ("palette", c.palette)) if p is not None)
    print(f"payloads: y {len(c.y)} B, z {len(c.z)} B{extras}")
    print(f"bpp:      {8 * len(data) / (h.width * h.height):.4f}")


def cmd_demo(args) -> None:
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


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _build_parser().parse_args(argv)
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
    sys.exit(main())
