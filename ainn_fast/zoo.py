"""Model zoo, like ``compressai.zoo``: ``ainn(quality, metric, config, pretrained)``."""

from __future__ import annotations

from .losses import METRICS
from .models import AINN, get_config


def ainn(quality: int, metric: str = "mse", config: str = "paper", pretrained: bool = False, **overrides) -> AINN:
    """A-INN at ``quality`` 1..8 for ``metric`` ("mse" or "ms-ssim").

    ``config`` picks the sizes ("paper", "lite", "tiny"); ``overrides`` replace single
    config fields (e.g. ``ms_cfrm=True``). Quality selects the width (paper: N = M = 128
    for q1-5, 192 for q6-8) and, for training, the lambda of ``losses.LAMBDAS``.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    cfg = get_config(config, quality)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = AINN(cfg)
    model.quality, model.metric = quality, metric
    if pretrained:
        raise RuntimeError(
            f"no pretrained weights ship for ainn(config={config!r}, quality={quality}, metric={metric!r}) yet; "
            "train one (see README) or load a checkpoint"
        )
    return model
