"""Model weights as safetensors that know their config, quality and metric.

No pickled code is executed on load: a checkpoint is a safetensors file whose metadata
holds the config (JSON), quality and metric, so a model can be rebuilt from it alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import CheckpointError
from .models import AINN, AINNConfig

FORMAT = "ainn_fast.checkpoint.v1"


def save_model(model: AINN, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    """Write the model's weights (optionally cast floating tensors to ``dtype``)."""
    tensors = {}
    for key, value in model.state_dict().items():
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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its config: {first}") from None
    return model
