"""Rate-distortion evaluation of ainn_fast and classic codecs on folders of images.

Every number comes from real files: bpp = 8 * (bytes of the whole file) / (W * H); PSNR
(RGB, peak 255) and MS-SSIM on the 8-bit reconstruction; encode and decode wall times.
Curves are written in CompressAI's results format (what ``compressai.utils.plot`` reads):

    {"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim-rgb",
     "encoding_time", "decoding_time"}, ...}

with one value per setting (quality), averaged over the images, settings in order of
rising bpp. Extra top-level keys keep what the averages hide: "settings", "images",
"per_image" (per setting, per image: bytes, bpp, psnr-rgb, ms-ssim-rgb, times), "notes".
MS-SSIM needs at least 161 pixels on each side (five scales of an 11-tap window): smaller
images get null there, and "ms-ssim-rgb" averages the images that have a value; when none
has, the key is left out (as CompressAI's own benchmark does for small images) and a note
says so.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from . import baselines, bdrate, image_io
from .errors import InputError
from .losses import MS_SSIM_MIN_SIDE

if TYPE_CHECKING:  # codec is imported where used: it pulls in the model
    from .codec import DeviceLike

PSNR_CAP = 100.0  # a lossless reconstruction: JSON has no infinity
METRICS = ("bytes", "bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")


@dataclass
class TestImage:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def pil(self) -> Image.Image:
        # A fresh image: no EXIF, ICC or source format for an encoder to carry along.
        return Image.fromarray(self.pixels, "RGB")


@dataclass
class Curve:
    key: str  # output file stem
    name: str
    description: str
    settings: list[str] = field(default_factory=list)
    # per_image[metric][setting index][image index]
    per_image: dict[str, list[list[float | None]]] = field(default_factory=lambda: {m: [] for m in METRICS})
    images: list[TestImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def mean(self, metric: str) -> list[float | None]:
        out = []
        for values in self.per_image[metric]:
            present = [v for v in values if v is not None]
            out.append(float(np.mean(present)) if present else None)
        return out

    def order(self) -> list[int]:
        bpp = self.mean("bpp")
        return sorted(range(len(bpp)), key=lambda i: bpp[i])

    def to_json(self) -> dict:
        order = self.order()
        results = {}
        for metric in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
            means = [self.mean(metric)[i] for i in order]
            if metric == "ms-ssim-rgb" and all(v is None for v in means):
                continue
            results[metric] = means
        return {
            "name": self.name,
            "description": self.description,
            "results": results,
            "settings": [self.settings[i] for i in order],
            "images": [{"name": im.name, "width": im.width, "height": im.height} for im in self.images],
            "per_image": {m: [self.per_image[m][i] for i in order] for m in METRICS},
            "notes": self.notes,
        }


def find_images(folders: Sequence[str | Path]) -> list[Path]:
    """Image files (by the extensions Pillow reads) directly inside each folder, sorted."""
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    found: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise InputError(f"{folder}: no such folder")
        if not path.is_dir():
            raise InputError(f"{folder}: not a folder")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
        if not files:
            raise InputError(f"{folder}: no images Pillow can read (by file extension)")
        found.extend(files)
    return found


def load_image(path: Path) -> TestImage:
    """The upright RGB pixels of an image file, as the codec sees them (image_io.read_rgb)."""
    return TestImage(path.name, image_io.read_rgb(path))


def psnr(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB of 8-bit RGB arrays over all samples, peak 255."""
    mse = float(np.mean((original.astype(np.float64) - reconstruction.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def ms_ssim(original: np.ndarray, reconstruction: np.ndarray) -> float | None:
    """MS-SSIM of 8-bit RGB arrays (scaled to [0, 1]); None below MS_SSIM_MIN_SIDE."""
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    from pytorch_msssim import ms_ssim as _ms_ssim

    def tensor(a):
        return torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1).unsqueeze(0).div(255)

    return float(_ms_ssim(tensor(original), tensor(reconstruction), data_range=1.0))


def measure(image: TestImage, encode: Callable[[], bytes], decode: Callable[[bytes], Image.Image]) -> dict:
    """One image through one codec setting: sizes, quality, times."""
    start = time.perf_counter()
    data = encode()
    encoded = time.perf_counter()
    rec = decode(data)
    decoded = time.perf_counter()
    rec = np.asarray(rec.convert("RGB"), dtype=np.uint8)
    if rec.shape != image.pixels.shape:
        raise RuntimeError(f"{image.name}: decoded {rec.shape}, expected {image.pixels.shape}")
    return {
        "bytes": len(data),
        "bpp": 8 * len(data) / (image.width * image.height),
        "psnr-rgb": psnr(image.pixels, rec),
        "ms-ssim-rgb": ms_ssim(image.pixels, rec),
        "encoding_time": encoded - start,
        "decoding_time": decoded - encoded,
    }


def _run_settings(
    curve: Curve, images: list[TestImage], jobs: Iterable[tuple[str, Callable, Callable]], progress
) -> Curve:
    """jobs: (setting label, encode(image) -> bytes, decode(bytes) -> image) per setting."""
    curve.images = images
    for label, encode, decode in jobs:
        curve.settings.append(label)
        rows = [measure(im, lambda im=im: encode(im), decode) for im in progress(images, f"{curve.key} {label}")]
        for metric in METRICS:
            curve.per_image[metric].append([row[metric] for row in rows])
    small = [im.name for im in images if min(im.width, im.height) < MS_SSIM_MIN_SIDE]
    if small:
        curve.notes.append(
            f"MS-SSIM is null for {len(small)} of {len(images)} images smaller than {MS_SSIM_MIN_SIDE} px on a side "
            f"({', '.join(small[:5])}{', ...' if len(small) > 5 else ''}); ms-ssim-rgb averages the others"
            + (" (none: key left out)" if len(small) == len(images) else "")
        )
    return curve


def _no_progress(items, label):
    return items


def evaluate_ainn(
    images: list[TestImage], models: list[tuple[str, torch.nn.Module]], device: DeviceLike = None,
    progress: Callable = _no_progress, description: str = "ainn_fast", refine: int = 0, streams: int | None = None,
    refine_precision: str = "auto",
) -> Curve:  # fmt: skip
    """ainn_fast's curve: one setting per (label, model); models are prepared here.
    ``refine``, ``refine_precision``: the encoder's latent refinement steps and their
    synthesis's precision, ``streams`` its y streams (codec.encode)."""
    from . import codec
    from .inference import prepare_for_decoding

    def jobs():
        for label, model in models:
            # Coded as ainn compress and decompress code (BatchNorm folded, NHWC on a CPU).
            model = prepare_for_decoding(codec.prepare_model(model, device))
            # One small untimed round trip first: lazy imports and backend set-up
            # would otherwise be charged to the first image.
            codec.decode(codec.encode(np.zeros((16, 16, 3), np.uint8), model)[0], model)
            yield (
                label,
                lambda im, model=model: codec.encode(
                    im.pixels, model, refine=refine, streams=streams, refine_precision=refine_precision
                )[0],
                lambda data, model=model: codec.decode(data, model)[0],
            )

    curve = Curve("ainn_fast", "ainn_fast", description)
    return _run_settings(curve, images, jobs(), progress)


def evaluate_baseline(
    images: list[TestImage], codec: baselines.Codec, qualities: Sequence[int] | None = None,
    progress: Callable = _no_progress,
) -> Curve:
    """A classic codec's curve over its quality ladder (or the qualities given)."""
    if codec.unavailable:
        raise InputError(f"{codec.key} is not available: {codec.unavailable}")
    qualities = list(qualities or codec.qualities)
    jobs = ((f"q{q}", lambda im, q=q: codec.encode(im.pil(), q), codec.decode) for q in qualities)
    curve = Curve(codec.key, codec.name, codec.description, notes=list(codec.notes))
    return _run_settings(curve, images, jobs, progress)


def bd_rates(test: Curve, anchors: Sequence[Curve], method: str = "pchip") -> dict:
    """BD-rate (PSNR) of ``test`` against each anchor; null with the reason where undefined."""
    t = test.to_json()["results"]
    out = {
        "test": test.name,
        "metric": "psnr-rgb",
        "method": method,
        "unit": "percent (negative: the test codec needs fewer bits at equal PSNR)",
        "results": {},
    }
    for anchor in anchors:
        a = anchor.to_json()["results"]
        try:
            entry = bdrate.bd_rate_details(a["bpp"], a["psnr-rgb"], t["bpp"], t["psnr-rgb"], method)
            entry["note"] = None
        except bdrate.BDRateError as e:
            entry = {"bd_rate": None, "psnr_interval": None, "method": method, "note": str(e)}
        entry["anchor"] = anchor.name
        out["results"][anchor.key] = entry
    return out


def plot_rd(curves: Sequence[Curve], title: str = "") -> bytes:
    """PNG of bpp vs PSNR for all curves (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for curve in curves:
        r = curve.to_json()["results"]
        learned = curve.key == "ainn_fast"
        ax.plot(r["bpp"], r["psnr-rgb"], marker="o", markersize=3, linewidth=2 if learned else 1,
                linestyle="-" if learned else "--", label=curve.name)  # fmt: skip
    ax.set_xlabel("bit-rate [bpp]")
    ax.set_ylabel("PSNR (RGB) [dB]")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def to_json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()


def table(curves: Sequence[Curve], bd: dict | None) -> str:
    """A short text summary: one row per codec."""
    rows = [("codec", "points", "bpp", "PSNR dB", "MS-SSIM", "enc s", "dec s", "BD-rate")]
    for c in curves:
        r = c.to_json()["results"]
        ms = r.get("ms-ssim-rgb")
        ms = f"{min(ms):.3f}-{max(ms):.3f}" if ms and None not in ms else "-"
        entry = (bd or {}).get("results", {}).get(c.key)
        if entry is None:
            bd_text = "-"
        elif entry["bd_rate"] is None:
            bd_text = "n/a"
        else:
            bd_text = f"{entry['bd_rate']:+.1f} %"
        rows.append((
            c.name, str(len(r["bpp"])), f"{min(r['bpp']):.3f}-{max(r['bpp']):.3f}",
            f"{min(r['psnr-rgb']):.2f}-{max(r['psnr-rgb']):.2f}", ms,
            f"{np.mean(r['encoding_time']):.3f}", f"{np.mean(r['decoding_time']):.3f}", bd_text,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if bd:
        lines.append(f"BD-rate: {bd['test']} against each codec ({bd['method']}, PSNR); negative = fewer bits")
    return "\n".join(lines)


# Default qualities of the default model when no checkpoint is given; keep them in step
# with the qualities whose trained weights ship (the issue asks for >= 3 spanning 0.1-1 bpp).
DEFAULT_QUALITIES = (1, 3, 6)  # the qualities that ship weights


def default_models(qualities: Sequence[int]) -> tuple[list[tuple[str, torch.nn.Module]], list[int]]:
    """The default model at each quality, and the qualities that have no trained weights."""
    from . import codec, zoo

    models, untrained = [], []
    for q in qualities:
        try:
            model = zoo.ainn(q, codec.DEFAULT_METRIC, codec.DEFAULT_CONFIG, pretrained=True)
        except RuntimeError:  # no shipped weights: codec's seeded untrained model
            model = codec.default_model(q)
            untrained.append(q)
        models.append((f"{codec.DEFAULT_CONFIG} q{q} {codec.DEFAULT_METRIC}", model))
    return models, untrained


def checkpoint_models(paths: Sequence[str]) -> list[tuple[str, torch.nn.Module]]:
    from .checkpoint import load_model

    models = []
    for path in paths:
        model = load_model(path)
        models.append((f"{Path(path).stem} ({model.config.name} q{model.quality} {model.metric})", model))
    return models


def parse_baselines(text: str | None) -> tuple[list[baselines.Codec], dict[str, str]]:
    """Codecs to run and those skipped (name -> reason). Asked for by name, an unavailable
    codec is an error; by default (``text`` None) it is skipped with its reason."""
    keys = list(baselines.NAMES) if text is None else [k.strip().lower() for k in text.split(",") if k.strip()]
    if keys == ["none"]:
        return [], {}
    unknown = [k for k in keys if k not in baselines.NAMES]
    if unknown or not keys:
        choices = ", ".join(baselines.NAMES)
        raise InputError(f"unknown baseline {', '.join(unknown) or repr(text)}; choose from {choices} (or none)")
    codecs, skipped = [], {}
    for key in dict.fromkeys(keys):
        codec = baselines.get(key)
        if codec.unavailable and text is not None:
            raise InputError(f"baseline {key} is not available: {codec.unavailable}")
        if codec.unavailable:
            skipped[key] = codec.unavailable
        else:
            codecs.append(codec)
    return codecs, skipped


def run_command(args: argparse.Namespace) -> None:
    """``ainn eval``: see the module docstring and ``ainn eval --help``."""
    import sys

    from .cli import _device, _write_atomic

    try:  # fail now, not after the evaluation, when the plot cannot be drawn
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("ainn eval needs matplotlib for rd.png: pip install 'ainn_fast[eval]'") from None
    codecs, skipped = parse_baselines(args.baselines)
    device = _device(args.device)
    if args.checkpoint and args.quality:
        raise InputError("--quality applies to the default model; a checkpoint knows its own quality")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder")
    names = ["ainn_fast.json"] + [f"{c.key}.json" for c in codecs] + ["bd_rate.json", "rd.png"]
    if not args.force:  # refuse before hours of work, not after
        existing = [n for n in names if (out_dir / n).exists()]
        if existing:
            raise InputError(f"{out_dir / existing[0]} exists (use --force to overwrite)")
    images = [load_image(p) for p in find_images(args.dirs)]
    notes = [f"{k} skipped: {reason}" for k, reason in skipped.items()]
    if args.checkpoint:
        models = checkpoint_models(args.checkpoint)
        description = "ainn_fast, checkpoints " + ", ".join(label for label, _ in models)
    else:
        models, untrained = default_models(args.quality or DEFAULT_QUALITIES)
        description = "ainn_fast default model " + ", ".join(label for label, _ in models)
        if untrained:
            description += f" (untrained weights at q{', q'.join(map(str, untrained))}: no trained weights ship yet)"
            listed = ", ".join(map(str, untrained))
            notes.append(f"no trained weights for quality {listed}: evaluating untrained weights")
    if args.refine:
        description += f", encoder latent refinement {args.refine} steps ({args.refine_precision} synthesis)"
    if args.streams is not None:
        description += ", one y stream (format 3)" if args.streams == 0 else f", {args.streams} y streams"
    for note in notes:
        print(f"ainn: note: {note}", file=sys.stderr)

    from tqdm import tqdm

    def progress(items, label):
        return tqdm(items, desc=label, unit="img", leave=False, disable=None)

    ours = evaluate_ainn(images, models, device, progress, description, args.refine, args.streams, args.refine_precision)
    curves = [ours] + [evaluate_baseline(images, c, progress=progress) for c in codecs]
    for note in dict.fromkeys(n for c in curves for n in c.notes):
        print(f"ainn: note: {note}", file=sys.stderr)
    bd = bd_rates(ours, curves[1:])
    bd["skipped"] = skipped
    outputs = {f"{c.key}.json": to_json_bytes(c.to_json()) for c in curves}
    outputs["bd_rate.json"] = to_json_bytes(bd)
    outputs["rd.png"] = plot_rd(curves, f"{len(images)} image{'s' * (len(images) != 1)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        _write_atomic(out_dir / name, lambda f, data=outputs[name]: f.write(data), args.force)
    print(table(curves, bd))
    print(f"wrote {', '.join(names)} to {out_dir}")
