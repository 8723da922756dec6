"""Convert a state_dict of the authors' released A-INN code to ainn_fast's layout.

The mapping, rule by rule (k: level 1..4, j: position in the level's Sequential,
s: stream 1 = low, 2 = high); everything else keeps its name:

    inv.operations{k}.1.weight                  -> inn.levels.{k-1}.conv1x1.weight
    inv.inv_conv_{k}.weight                     -> (alias of the same module; must be equal)
    inv.operations{k}.{j}.{G1,G2,H1,H2}.conv{n} -> inn.levels.{k-1}.couplings.{j-2}.{...}.conv{n}
    inv.freq_D.*                                -> fdsm_d.*
    inv.freq_S.masknet.*                        -> fdsm_s.masknet.*
    inv.rdb_last_{s}.*                          -> cfrm.{s-1}.*
    inv.denoising{d}_{s}.inc.*                  -> pdm.{d+1}.{s-1}.unet.inc.*
    inv.denoising{d}_{s}.down{i}.maxpool_conv.1.* -> pdm.{d+1}.{s-1}.unet.downs.{i-1}.*
    inv.denoising{d}_{s}.up{i}.conv.*           -> pdm.{d+1}.{s-1}.unet.ups.{i-1}.conv.*
    inv.denoising{d}_{s}.outc.conv.*            -> pdm.{d+1}.{s-1}.unet.outc.*
    h_a, h_s, context_prediction, entropy_parameters, entropy_bottleneck,
    gaussian_conditional                        -> unchanged (CompressAI's names)

(denoising1 follows inverse level 2, denoising2 level 3, denoising3 level 4.) A leading
``module.`` (DataParallel) is stripped. A key no rule knows, a key the model lacks or
lacks a value for, and a shape that does not fit are refused with the key named.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from .models import AINN

_ALIAS = re.compile(r"inv\.inv_conv_(\d)\.weight")

_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"inv\.operations(\d)\.1\.weight"), lambda m: f"inn.levels.{int(m[1]) - 1}.conv1x1.weight"),
    (
        re.compile(r"inv\.operations(\d)\.(\d+)\.([GH][12])\.(conv\d\.(?:weight|bias))"),
        lambda m: f"inn.levels.{int(m[1]) - 1}.couplings.{int(m[2]) - 2}.{m[3]}.{m[4]}",
    ),
    (re.compile(r"inv\.freq_D\.(.+)"), lambda m: f"fdsm_d.{m[1]}"),
    (re.compile(r"inv\.freq_S\.masknet\.(.+)"), lambda m: f"fdsm_s.masknet.{m[1]}"),
    (re.compile(r"inv\.rdb_last_([12])\.(.+)"), lambda m: f"cfrm.{int(m[1]) - 1}.{m[2]}"),
    (
        re.compile(r"inv\.denoising(\d)_([12])\.inc\.(.+)"),
        lambda m: f"pdm.{int(m[1]) + 1}.{int(m[2]) - 1}.unet.inc.{m[3]}",
    ),
    (
        re.compile(r"inv\.denoising(\d)_([12])\.down(\d)\.maxpool_conv\.1\.(.+)"),
        lambda m: f"pdm.{int(m[1]) + 1}.{int(m[2]) - 1}.unet.downs.{int(m[3]) - 1}.{m[4]}",
    ),
    (
        re.compile(r"inv\.denoising(\d)_([12])\.up(\d)\.conv\.(.+)"),
        lambda m: f"pdm.{int(m[1]) + 1}.{int(m[2]) - 1}.unet.ups.{int(m[3]) - 1}.conv.{m[4]}",
    ),
    (
        re.compile(r"inv\.denoising(\d)_([12])\.outc\.conv\.(.+)"),
        lambda m: f"pdm.{int(m[1]) + 1}.{int(m[2]) - 1}.unet.outc.{m[3]}",
    ),
    (
        re.compile(r"((?:h_a|h_s|context_prediction|entropy_parameters|entropy_bottleneck|gaussian_conditional)\..+)"),
        lambda m: m[1],
    ),
]


class ConversionError(ValueError):
    """An official state_dict that does not fit; the message names the key."""


def official_key(key: str) -> str:
    """ainn_fast's name for one key of the authors' state_dict."""
    for pattern, rename in _RULES:
        m = pattern.fullmatch(key)
        if m:
            return rename(m)
    raise ConversionError(f"unknown key in official state_dict: {key!r}")


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: AINN | None = None
) -> dict[str, torch.Tensor]:
    """Rename an official state_dict to ours; with ``model``, also check keys and shapes."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        alias = _ALIAS.fullmatch(key)
        if alias:
            aliases[f"inv.operations{alias[1]}.1.weight"] = (key, value)
            continue
        new = official_key(key)
        if new in out:
            raise ConversionError(f"official key {key!r} maps onto {new!r} twice")
        out[new] = value
    # In the authors' code inv_conv_k is the same module as operations{k}.1, registered
    # twice; two different matrices would mean a model we do not implement.
    for target, (key, value) in aliases.items():
        mine = out.get(official_key(target))
        if mine is None or mine.shape != value.shape or not torch.equal(mine, value):
            raise ConversionError(f"official key {key!r} differs from {target!r}; expected one shared 1x1 conv")
    if model is not None:
        _check_against(out, model)
    return out


def _check_against(converted: Mapping[str, torch.Tensor], model: AINN) -> None:
    expected = model.state_dict()
    for key, value in converted.items():
        if key not in expected:
            raise ConversionError(f"official state_dict holds {key!r}, which this model ({model.config.name}) lacks")
        # CompressAI resizes the CDF buffers on load; every other shape must agree.
        resizable = key.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
        if not resizable and tuple(value.shape) != tuple(expected[key].shape):
            raise ConversionError(
                f"shape of {key!r}: official {tuple(value.shape)}, model {tuple(expected[key].shape)}"
            )
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ConversionError(f"official state_dict lacks {missing[0]!r} ({len(missing)} keys missing)")


def load_official(state_dict: Mapping[str, torch.Tensor], quality: int, metric: str = "mse") -> AINN:
    """Build the paper-configuration model matching an official state_dict and load it strictly."""
    from .zoo import ainn

    try:
        M = state_dict["context_prediction.weight"].shape[1]
    except KeyError:
        raise ConversionError("official state_dict lacks 'context_prediction.weight'") from None
    model = ainn(quality, metric, config="paper")
    if model.M != M:
        raise ConversionError(f"official weights have M={M}, but paper quality {quality} has M={model.M}")
    model.load_state_dict(convert_official_state_dict(state_dict, model), strict=True)
    return model
