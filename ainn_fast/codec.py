"""Whole-file compression: image -> .ainn bytes -> image.

``compress(image, model=None) -> bytes`` and ``decompress(data, model=None) -> PIL image``.
``model=None`` means the default model (``DEFAULT_CONFIG``) at the requested quality on
compression, and the model the header names on decompression. A decoder refuses a file
made by other weights (the header holds a hash of them).
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from . import container, image_io, row_streams
from .checkpoint import is_derived
from .entropy_coding import decode_latents, decode_latents_v1, encode_latents, encode_latents_v1, split_shift
from .errors import FormatError, InputError, ModelMismatchError
from .inference import prepare_for_decoding, uses_front_graphs
from .losses import MS_SSIM_MIN_SIDE
from .models import AINN, CONFIGS, STRIDE
from .refinement import PRECISIONS as REFINE_PRECISIONS, rd_cost, refine_latent, synthesis_dtype

# A device as callers name it: None means the model's (or the CPU).
DeviceLike = str | torch.device | None

DEFAULT_CONFIG = "lite"
DEFAULT_QUALITY = 3
DEFAULT_METRIC = "mse"
# Peak memory of coding, per padded pixel, above what the process holds before it. Measured
# on the CPU with prepared models (channels_last, BatchNorm folded, no autograd), at
# 1024x768, 2048x1536 and 4000x3000 (2026-12-04): decoding 562-737 B (lite) and
# 1,030-1,208 B (paper), encoding 122-317 B (both), the upper ends with the ``ainn``
# script's allocator tuning (allocator.py), which keeps freed memory; here with a margin
# of about 1.5x. The first codec's 2.5 KiB, measured before decoding was prepared, refused
# a 12-megapixel photo on a 24 GiB machine that decodes it in 9 GB. A GPU has not been
# measured (cuDNN's workspaces, the caching allocator), so there that estimate stands.
DECODE_BYTES_PER_PIXEL = {"tiny": 1024, "lite": 1024, "paper": 1792}
ENCODE_BYTES_PER_PIXEL = 512
GPU_BYTES_PER_PIXEL = 2560
# The same for encoding with latent refinement, whose backward pass keeps the synthesis's
# activations: 4.2-4.4 KiB measured (lite, CPU, 512x512 and 1024x768), with margin; with
# the synthesis in bf16 (refinement.synthesis_dtype) 2.1-2.4 KiB (512x512 to 2048x1536).
REFINE_BYTES_PER_PIXEL = 6144
REFINE_BF16_BYTES_PER_PIXEL = 3584
# Refined latents whose files the encoder measures (after each third of the steps): each
# costs a coding pass and a synthesis, a few steps' time.
REFINE_SNAPSHOTS = 3


def default_model(quality: int = DEFAULT_QUALITY, metric: str = DEFAULT_METRIC, config: str = DEFAULT_CONFIG) -> AINN:
    """The model used when none is given: the shipped weights of ``config``; where none
    ship for that config and metric, the configuration initialised from a fixed seed
    (untrained: only useful for tests and plumbing)."""
    from . import zoo

    shipped = [q for c, m, q in zoo.pretrained_available() if (c, m) == (config, metric)]
    if quality in shipped:
        return zoo.ainn(quality, metric, config, pretrained=True)
    if shipped:
        raise InputError(
            f"no {config} {metric} weights ship for quality {quality}; shipped qualities: "
            f"{', '.join(map(str, shipped))} (or pass --checkpoint)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return zoo.ainn(quality, metric, config)


@functools.lru_cache(maxsize=4)
def _shared_default(quality: int, metric: str, config: str, device: str) -> AINN:
    """Prepared default models kept for this module's own calls: loading and preparing one
    costs about 0.5 s of CPU (lite), as much as decoding the latents of a 512x512 photo,
    and a program decoding many files would pay it each time. Prepared for coding too
    (inference.prepare_for_decoding: both transforms). Never handed out (callers of
    ``resolve_model`` get a model of their own), because ``prepare_for_decoding`` and
    ``.to()`` change a model in place."""
    return prepare_for_decoding(prepare_model(default_model(quality, metric, config), device))


def _device_key(device) -> str:
    return str(torch.device(device)) if device is not None else "cpu"


def weights_hash(model: AINN) -> bytes:
    """First 16 bytes of SHA-256 over the learned state (buffers rebuilt without a
    checkpoint, such as the CDF tables, are left out: see checkpoint.DERIVED)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if is_derived(key):
            continue
        t = value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.digest()[: container.HASH_BYTES]


def prepare_model(model: AINN, device: DeviceLike = None) -> AINN:
    """Evaluation mode, CDF tables derived on the CPU (deterministic), then to ``device``."""
    target = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().cpu()
    model.update(force=True)
    model._ainn_hash = weights_hash(model)
    return model.to(target)


def _identity(model: AINN) -> tuple[str, int, str, bytes]:
    if getattr(model, "_ainn_hash", None) is None:
        prepare_model(model)
    return model.config.name, int(getattr(model, "quality", 0) or 0), getattr(model, "metric", "mse"), model._ainn_hash


def bytes_per_pixel(
    config: str, device: torch.device, decoding: bool, refine: bool = False, refine_bf16: bool = False
) -> int:
    """The memory estimate :func:`check_memory` uses for coding with model ``config``
    (``refine_bf16``: the refinement's synthesis runs in bf16)."""
    if refine:
        return REFINE_BF16_BYTES_PER_PIXEL if refine_bf16 else REFINE_BYTES_PER_PIXEL
    if device.type != "cpu":
        return GPU_BYTES_PER_PIXEL
    return DECODE_BYTES_PER_PIXEL.get(config, GPU_BYTES_PER_PIXEL) if decoding else ENCODE_BYTES_PER_PIXEL


def padded_pixels(width: int, height: int) -> int:
    """Pixels the transforms process for an image of this size (padded to the stride)."""
    return math.ceil(height / STRIDE) * STRIDE * math.ceil(width / STRIDE) * STRIDE


def check_memory(width: int, height: int, device: torch.device, per_pixel: int) -> None:
    """Fail before allocating when an image of this size cannot fit."""
    need = padded_pixels(width, height) * per_pixel
    available = _available_bytes(device)
    if available is not None and need > available:
        raise InputError(
            f"a {width}x{height} image needs about {need / 2**30:.1f} GiB to code, "
            f"only {available / 2**30:.1f} GiB available on {device.type}"
        )


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def pad_to_stride(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % STRIDE, -w % STRIDE
    # Edge replication: no artificial edge for the transform to spend bits on.
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def encode(
    image: image_io.ImageLike,
    model: AINN | None = None,
    quality: int | None = None,
    device: DeviceLike = None,
    progress: Callable | None = None,
    version: int = container.VERSION,
    refine: int = 0,
    refine_progress: Callable | None = None,
    streams: int | None = None,
    refine_precision: str = "auto",
) -> tuple[bytes, torch.Tensor]:
    """Compress; return the file's bytes and the quantized latent y_hat (for checks).

    ``streams``: format 4's rANS streams for y (docs/format.md; None: as many as the
    rows a wavefront spans, so that a decoder takes a front at once; 0: format 3's one).

    ``refine`` > 0 spends that many gradient steps on the latent for this image (see
    :mod:`ainn_fast.refinement`; the file is an ordinary one, kept only where it costs
    less than the unrefined file by the model's rate-distortion loss);
    ``refine_precision`` (auto, fp32, bf16) is that of its steps' synthesis.
    ``version=1`` writes the old float, raster-order format, ``version=2`` format 3
    without its scale shift and ``version=3`` format 3: one rANS stream for y (a few bytes
    per row stream smaller than format 4, whose decoder takes a front's positions one at
    a time)."""
    if streams is not None and not 0 <= streams <= row_streams.MAX_STREAMS:
        raise InputError(f"streams must be 0..{row_streams.MAX_STREAMS}, got {streams}")
    if streams == 0 and version >= 4:
        version = 3
    prepared = image_io.prepare(image)
    if model is None:
        model = _shared_default(quality or DEFAULT_QUALITY, DEFAULT_METRIC, DEFAULT_CONFIG, _device_key(device))
    elif quality is not None and quality != getattr(model, "quality", quality):
        raise InputError(f"quality {quality} asked for, but the model given has quality {model.quality}")
    config, q, metric, digest = _identity(model)
    if device is not None and next(model.parameters()).device != torch.device(device):
        model.to(device)
    dev = next(model.parameters()).device
    _, _, height, width = prepared.rgb.shape
    if not (1 <= width <= container.MAX_SIDE and 1 <= height <= container.MAX_SIDE):
        raise InputError(f"image is {width}x{height}; each side must be 1..{container.MAX_SIDE}")
    if refine < 0:
        raise InputError(f"refinement steps must be >= 0, got {refine}")
    if refine_precision not in REFINE_PRECISIONS:
        raise InputError(f"refinement precision {refine_precision!r}: use one of {', '.join(REFINE_PRECISIONS)}")
    if refine and not q:
        raise InputError("refinement needs the model's quality (its lambda); this model has none")
    if refine and metric == "ms-ssim" and min(width, height) < MS_SSIM_MIN_SIDE:
        raise InputError(f"refinement of an MS-SSIM model needs at least {MS_SSIM_MIN_SIDE} px a side")
    bf16 = bool(refine) and synthesis_dtype(refine_precision, dev) == torch.bfloat16
    check_memory(width, height, dev, bytes_per_pixel(model.config.name, dev, False, bool(refine), bf16))
    x = pad_to_stride(prepared.rgb.to(dev))
    with torch.no_grad():
        y = model.g_a(x)
    context = model.config.context
    if version == 1 and context != "serial":
        raise InputError(f"format 1 has no {context} context")

    def pack(y: torch.Tensor, z: torch.Tensor | None = None) -> tuple[bytes, torch.Tensor]:
        if version == 1:  # the old format codes h_a(y), not a refined z
            (y_string, z_string, y_hat), shift = encode_latents_v1(model, y), 0
        else:
            (y_string,), (z_string,), y_hat, (shift,) = encode_latents(
                model, y, progress, None if version >= 3 else 0, padded_fronts=uses_front_graphs(model),
                streams=streams if version >= 4 else 0, z=z,
            )
        base, deltas = split_shift(shift)
        header = container.Header(config, q or 1, metric, digest, width, height, prepared.mode, version, context, base)
        return container.pack(container.Container(header, y_string, z_string, prepared.alpha, prepared.palette, deltas)), y_hat

    data, y_hat = pack(y)
    if refine:
        snapshots = refine_latent(
            model, x, y, (height, width), refine, progress=refine_progress, snapshots=REFINE_SNAPSHOTS,
            precision=refine_precision,
        )
        target = x[..., :height, :width]

        def cost(candidate: tuple[bytes, torch.Tensor]) -> float:
            with torch.no_grad():
                x_hat = model.g_s(candidate[1])[..., :height, :width]
            return rd_cost(model, len(candidate[0]), x_hat, target)

        data, y_hat = min([(data, y_hat)] + [pack(y, z) for y, z in snapshots], key=cost)
    return data, y_hat


def resolve_model(
    header: container.Header, model: AINN | None = None, device: DeviceLike = None, *, _shared: bool = False
) -> AINN:
    """The model that decodes ``header``: the one given, else the default it names (a
    model of the caller's own; this module's decoders pass ``_shared`` to reuse one)."""
    if model is None:
        if header.config not in CONFIGS:
            raise FormatError(f"file names an unknown model config {header.config!r}")
        if _shared:
            model = _shared_default(header.quality, header.metric, header.config, _device_key(device))
        else:
            model = prepare_model(default_model(header.quality, header.metric, header.config), device)
        origin = "the default model"
    else:
        origin = "the model given"
        if device is not None:
            model.to(device)
    config, quality, metric, digest = _identity(model)
    if digest != header.weights_hash:
        raise ModelMismatchError(
            f"file was made by {header.model_identity()}; {origin} is {config} q{quality} {metric}, "
            f"weights {digest.hex()}: decode it with the weights that made it (ainn decompress --checkpoint)"
        )
    return model


def latent_size(header: container.Header) -> tuple[int, int]:
    return math.ceil(header.height / STRIDE) * STRIDE // 16, math.ceil(header.width / STRIDE) * STRIDE // 16


def _device_of(model: AINN | None, device) -> torch.device:
    return torch.device(device) if device is not None else (next(model.parameters()).device if model else torch.device("cpu"))


def _file_bytes(data) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):  # a path, most often
        raise InputError(f"decoding takes an .ainn file's bytes, got {type(data).__name__} (read the file first)")
    return bytes(data)


def decode(
    data: bytes, model: AINN | None = None, device: DeviceLike = None, progress: Callable | None = None
) -> tuple[Image.Image, torch.Tensor]:
    """Decompress; return the image and the decoded latent y_hat."""
    c = container.unpack(_file_bytes(data))
    h = c.header
    dev = _device_of(model, device)
    check_memory(h.width, h.height, dev, bytes_per_pixel(h.config, dev, decoding=True))
    model = resolve_model(h, model, device, _shared=True)
    if h.version == 1:
        y_hat = decode_latents_v1(model, c.y, c.z, latent_size(h))
    else:
        (y_hat,) = _decode_latents(model, [c], dev, progress)
    return _synthesize(model, y_hat, c), y_hat


def _decode_latents(model: AINN, files: list[container.Container], device, progress=None) -> list[torch.Tensor]:
    """Format 2 to 4 latents of files of one model, by the context its header names."""
    context = files[0].header.context
    if context != model.config.context:
        raise ModelMismatchError(f"file was coded with the {context} context; the model has the {model.config.context} one")
    ys, zs, sizes = [c.y_streams() for c in files], [c.z for c in files], [latent_size(c.header) for c in files]
    for c in files:
        if c.channel_shifts is not None and len(c.channel_shifts) != model.M:
            raise FormatError(f"file has scale shifts for {len(c.channel_shifts)} channels; the model has {model.M}")
    return decode_latents(
        model, ys, zs, sizes, device, progress, [c.y_shift() for c in files], padded_fronts=uses_front_graphs(model)
    )


def _synthesize(model: AINN, y_hat: torch.Tensor, c: container.Container):
    with torch.no_grad():
        x_hat = model.g_s(y_hat)[:, :, : c.header.height, : c.header.width]
    return image_io.restore(x_hat, c.header.mode, c.alpha, c.palette)


def decode_batch(
    files: list[bytes], model: AINN | None = None, device: DeviceLike = None
) -> list[tuple[Image.Image, torch.Tensor]]:
    """Decode several format 2 to 4 files of one model together (one wavefront pass for all the
    latents, whatever their sizes); returns (image, y_hat) per file, as :func:`decode`."""
    parsed = [container.unpack(_file_bytes(data)) for data in files]
    if not parsed:
        return []
    for c in parsed:
        if c.header.version < 2:
            raise FormatError(f"batch decoding reads formats 2 to 4 only, got a version {c.header.version} file")
        if (c.header.config, c.header.quality, c.header.metric, c.header.weights_hash) != (
            parsed[0].header.config, parsed[0].header.quality, parsed[0].header.metric, parsed[0].header.weights_hash
        ):
            raise ModelMismatchError("files of one batch must come from one model; decode them separately")
    dev = _device_of(model, device)
    for c in parsed:
        check_memory(c.header.width, c.header.height, dev, bytes_per_pixel(c.header.config, dev, decoding=True))
    model = resolve_model(parsed[0].header, model, device, _shared=True)
    y_hats = _decode_latents(model, parsed, dev)
    return [(_synthesize(model, y_hat, c), y_hat) for y_hat, c in zip(y_hats, parsed)]


def compress(
    image: image_io.ImageLike, model: AINN | None = None, quality: int | None = None, device: DeviceLike = None
) -> bytes:
    """A whole .ainn file for ``image`` (PIL image, uint8 array or float tensor)."""
    return encode(image, model, quality, device)[0]


def decompress(data: bytes, model: AINN | None = None, device: DeviceLike = None) -> Image.Image:
    """The image of a whole .ainn file."""
    return decode(data, model, device)[0]
