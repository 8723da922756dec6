"""Model zoo, like ``compressai.zoo``: ``ainn(quality, metric, config, pretrained)``."""

from __future__ import annotations

from pathlib import Path

from .errors import OptionError
from .losses import METRICS
from .models import AINN, get_config

# Shipped weights: ainn_fast/weights/{config}_{metric}_q{quality}.safetensors (fp16, CDF
# tables left out and recomputed on load).
WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(config: str, metric: str, quality: int) -> Path:
    return WEIGHTS_DIR / f"{config}_{metric}_q{quality}.safetensors"


def pretrained_available() -> list[tuple[str, str, int]]:
    """(config, metric, quality) of every set of shipped weights."""
    found = []
    for p in sorted(WEIGHTS_DIR.glob("*_q*.safetensors")):
        config, metric, q = p.stem.rsplit("_", 2)
        found.append((config, metric, int(q[1:])))
    return found


def ainn(quality: int, metric: str = "mse", config: str = "paper", pretrained: bool = False, **overrides) -> AINN:
    """A-INN at ``quality`` 1..8 for ``metric`` ("mse" or "ms-ssim").

    ``config`` picks the sizes ("paper", "lite", "tiny"); ``overrides`` replace single
    config fields (e.g. ``ms_cfrm=True``). Quality selects the width (paper: N = M = 128
    for q1-5, 192 for q6-8) and, for training, the lambda of ``losses.LAMBDAS``.
    """
    if metric not in METRICS:
        raise OptionError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    cfg = get_config(config, quality)
    if pretrained:
        path = weights_path(config, metric, quality)
        if overrides or not path.exists():
            shipped = ", ".join(f"{c} {m} q{q}" for c, m, q in pretrained_available()) or "none"
            raise RuntimeError(
                f"no pretrained weights ship for ainn(config={config!r}, quality={quality}, metric={metric!r}"
                f"{', with overrides' if overrides else ''}); shipped: {shipped}"
            )
        from .checkpoint import load_model

        model = load_model(path)
        model.quality, model.metric = quality, metric
        return model
    if overrides:
        cfg = cfg.replace(**overrides)
    model = AINN(cfg)
    model.quality, model.metric = quality, metric
    return model
