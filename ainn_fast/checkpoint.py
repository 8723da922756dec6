"""Model weights as safetensors that know their config, quality and metric.

No pickled code is executed on load: a checkpoint is a safetensors file whose metadata
holds the config (JSON), quality and metric, so a model can be rebuilt from it alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import CheckpointError
from .models import AINN, AINNConfig

FORMAT = "ainn_fast.checkpoint.v1"
# Buffers rebuilt without the checkpoint: entropy-coder tables that update() derives from
# the weights, and the masked convolution's constant mask. Optional in a checkpoint.
DERIVED = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", "mask")


def is_derived(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in DERIVED


def save_model(
    model: AINN, path: str | os.PathLike, dtype: torch.dtype | None = None, derived: bool = True
) -> None:
    """Write the model's weights (optionally cast floating tensors to ``dtype``; with
    ``derived=False`` leave out the CDF tables, which loading recomputes)."""
    tensors = {}
    for key, value in model.state_dict().items():
        if not derived and is_derived(key):
            continue
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "quality": str(getattr(model, "quality", 0)),
        "metric": getattr(model, "metric", "mse"),
    }
    save_file(tensors, str(path), metadata=metadata)
    # safetensors creates its files 0600; give them the mode every other file gets (as
    # torch.save's do), so that checkpoints shared on a cluster stay readable.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> AINN:
    """Rebuild a model from a checkpoint written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{str(path)!r} is not an ainn_fast checkpoint (no {FORMAT} metadata)")
        config = AINNConfig.from_dict(json.loads(metadata["config"]))
        state = load_file(str(path), device=map_location)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e}") from None
    model = AINN(config)
    model.quality, model.metric = int(metadata["quality"]), metadata["metric"]
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    missing_derived = [k for k in reference if k not in state and is_derived(k)]
    for key in missing_derived:  # recomputed below
        state[key] = reference[key]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its config: {first}") from None
    if missing_derived:
        model.update(force=True)
    return model


def restore_bounds(model: AINN) -> AINN:
    """Reset the entropy models' constant lower bounds to the values the architecture sets.

    fp16 weights (the shipped ones) round the likelihood bound 1e-9 to 0: harmless for
    coding, but an infinite loss as soon as training starts from them. Not done on every
    load because the bounds are part of the weights hash that files carry."""
    fresh = {"gaussian_conditional": GaussianConditional(None), "entropy_bottleneck": EntropyBottleneck(model.N)}
    for name, module in fresh.items():
        target = dict(getattr(model, name).named_buffers())
        for key, value in module.named_buffers():
            if key.endswith("bound"):
                target[key].copy_(value)
    return model


def _rebuilt(model: AINN, **changes) -> AINN:
    """An untrained model of ``model``'s config with ``changes``, its quality and metric."""
    new = AINN(model.config.replace(**changes))
    new.quality, new.metric = getattr(model, "quality", 0), getattr(model, "metric", "mse")
    return new


def with_context(model: AINN, context: str) -> AINN:
    """A new model like ``model`` with the ``context`` model ("serial" or "checkerboard"),
    carrying over every weight; the context kernel keeps only the taps of its new mask
    (a warm start for fine-tuning one context from the other)."""
    new = _rebuilt(model, context=context)
    own = new.state_dict()  # derived buffers (CDF tables, masks) stay the new model's
    new.load_state_dict({k: own[k] if is_derived(k) else v for k, v in model.state_dict().items()})
    with torch.no_grad():
        new.context_prediction.weight.mul_(new.context_prediction.mask)
    new.update(force=True)
    return new


def with_cfrm_layers(model: AINN, layers: int) -> AINN:
    """A new model like ``model`` whose CFRMs have ``layers`` dense layers (no fewer than it
    has), computing exactly what ``model`` computes: every weight carries over, the new
    layers start at PyTorch's default initialisation and the columns of ``lff`` that read
    them at zero. Fine-tuning from it grows the feature recovery without starting over."""
    have = len(model.cfrm[0].layers)
    if layers < have:
        raise ValueError(f"the model has {have} CFRM layers; growing cannot remove any (asked for {layers})")
    new = _rebuilt(model, cfrm_layers=layers)
    state = new.state_dict()  # derived buffers (CDF tables, masks) stay the new model's
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if is_derived(key):
                continue
            if key.startswith("cfrm.") and key.endswith("lff.weight"):  # (768, M * (1 + layers), 1, 1)
                state[key].zero_()
                state[key][:, : value.shape[1]] = value
            else:
                state[key].copy_(value)
    new.load_state_dict(state)
    new.update(force=True)
    return new


def export_weights(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a checkpoint's weights as fp16 without the derived CDF tables (shipping form)."""
    save_model(load_model(src), dst, dtype=torch.float16, derived=False)
