"""Entropy coding of A-INN's latents with CompressAI's rANS coder.

z is coded with the factorized entropy bottleneck; y with the Gaussian conditional whose
(scale, mean) at each latent position comes from the hyperprior and the 5x5 causal
context of already decoded positions. Encoder and decoder compute those parameters with
one function, :func:`_position_params`, on identical inputs (a zero-initialised buffer
filled position by position), so the decoder reproduces the encoder's y_hat bit-exactly
on the same device. The loop is serial, position by position in raster order (the
reference; a parallel decoder is a later milestone).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder

from .errors import FormatError

KERNEL = 5
PAD = KERNEL // 2


def _position_params(model, y_pad: torch.Tensor, params: torch.Tensor, masked_weight: torch.Tensor, h: int, w: int):
    crop = y_pad[:, :, h : h + KERNEL, w : w + KERNEL]
    ctx = F.conv2d(crop, masked_weight, bias=model.context_prediction.bias)
    gaussian = model.entropy_parameters(torch.cat((params[:, :, h : h + 1, w : w + 1], ctx), dim=1))
    scales, means = gaussian.chunk(2, 1)
    return scales.flatten(), means.flatten()


def _tables(model) -> tuple[list, list, list]:
    # Rows trimmed to their used length: the coder reads no further, and the bindings
    # convert the whole table on every call (5x less work per decoded position).
    gc = model.gaussian_conditional
    lengths = gc.cdf_length.tolist()
    cdfs = [row[:n] for row, n in zip(gc.quantized_cdf.tolist(), lengths)]
    return cdfs, lengths, gc.offset.tolist()


def _guard(payload: bytes, symbols: int) -> bytes:
    """The payload followed by zeros: CompressAI's rANS decoder does not bounds-check its
    input, so a forged payload could make it read past the end; each decoded symbol reads
    at most 4 bytes outside of bypass codes, so this keeps such reads inside our buffer."""
    return payload + bytes(4 * symbols + 64)


def _masked_weight(model) -> torch.Tensor:
    cp = model.context_prediction
    return cp.weight * cp.mask


@torch.no_grad()
def encode_latents(model, y: torch.Tensor, progress: Callable | None = None) -> tuple[bytes, bytes, torch.Tensor]:
    """Code one latent y (1, M, h, w). Returns (y_string, z_string, y_hat)."""
    z = model.h_a(y)
    z_string = model.entropy_bottleneck.compress(z)[0]
    z_hat = model.entropy_bottleneck.decompress([z_string], z.shape[-2:])
    params = model.h_s(z_hat)
    height, width = y.shape[-2:]
    y_pad = torch.zeros(1, model.M, height + 2 * PAD, width + 2 * PAD, device=y.device, dtype=y.dtype)
    weight = _masked_weight(model)
    gc = model.gaussian_conditional
    symbols: list[int] = []
    indexes: list[int] = []
    for h in _rows(height, progress):
        for w in range(width):
            scales, means = _position_params(model, y_pad, params, weight, h, w)
            q = torch.round(y[0, :, h, w] - means)
            y_pad[0, :, h + PAD, w + PAD] = q + means
            symbols.extend(q.to(torch.int32).tolist())
            indexes.extend(gc.build_indexes(scales).tolist())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, *_tables(model))
    return encoder.flush(), z_string, y_pad[:, :, PAD:-PAD, PAD:-PAD]


@torch.no_grad()
def decode_latents(
    model, y_string: bytes, z_string: bytes, latent_size: tuple[int, int], progress: Callable | None = None
) -> torch.Tensor:
    """Invert :func:`encode_latents`: y_hat (1, M, h, w) from the two strings."""
    height, width = latent_size
    device = next(model.parameters()).device
    try:
        z_symbols = model.N * (height // 4) * (width // 4)
        z_hat = model.entropy_bottleneck.decompress([_guard(z_string, z_symbols)], (height // 4, width // 4))
    except Exception as e:  # the rANS bindings raise bare RuntimeErrors on garbage
        raise FormatError(f"hyperprior payload does not decode: {e}") from None
    params = model.h_s(z_hat.to(device))
    y_pad = torch.zeros(1, model.M, height + 2 * PAD, width + 2 * PAD, device=device)
    weight = _masked_weight(model)
    gc = model.gaussian_conditional
    tables = _tables(model)
    decoder = RansDecoder()
    decoder.set_stream(_guard(y_string, model.M * height * width))
    for h in _rows(height, progress):
        for w in range(width):
            scales, means = _position_params(model, y_pad, params, weight, h, w)
            q = decoder.decode_stream(gc.build_indexes(scales).tolist(), *tables)
            y_pad[0, :, h + PAD, w + PAD] = torch.tensor(q, dtype=torch.float32, device=device) + means
    return y_pad[:, :, PAD:-PAD, PAD:-PAD]


def _rows(height: int, progress: Callable | None):
    return progress(range(height)) if progress else range(height)
