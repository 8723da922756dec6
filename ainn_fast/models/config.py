"""Model configurations: ``paper`` (the authors' sizes), ``lite`` and ``tiny``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import OptionError

# Widths of the PDM U-Nets, keyed by the inverse level they follow (4: 192 ch at H/8,
# 3: 48 ch at H/4, 2: 12 ch at H/2). Deeper as resolution rises ("progressive").
PAPER_PDM_WIDTHS = {4: (384, 384), 3: (192, 384, 384), 2: (96, 192, 384, 384)}


@dataclass(frozen=True)
class AINNConfig:
    name: str
    N: int  # hyper-network width
    M: int  # latent channels
    kernel_sizes: tuple[int, ...] = (5, 5, 3, 3)
    # Hidden width of the coupling sub-networks per level; None = the level's width.
    coupling_hidden: tuple[int | None, ...] = (None, None, None, None)
    couplings_per_level: int = 3
    clamp: float = 1.0
    pdm_widths: dict[int, tuple[int, ...]] = field(default_factory=lambda: dict(PAPER_PDM_WIDTHS))
    pdm_step: float = 0.2
    pdm_unet_identity: bool = True  # the authors' U returns body(x) + x
    mask_ch: int = 32  # FDSM-S mask U-Net width
    cfrm_layers: int | None = None  # None: 768 // M - 1, as the authors
    ms_cfrm: bool = False
    ms_cfrm_layers: int = 2
    # Entropy model context: "serial" (5x5 causal, the exact A-INN model, decoded in
    # wavefronts) or "checkerboard" (two passes, faster decoding, more rate: see
    # benchmarks/results/checkerboard_rd.md).
    context: str = "serial"

    def __post_init__(self) -> None:
        if self.context not in ("serial", "checkerboard"):
            raise OptionError(f"unknown context {self.context!r}; use serial or checkerboard")

    def replace(self, **changes) -> "AINNConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pdm_widths"] = {str(k): list(v) for k, v in self.pdm_widths.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AINNConfig":
        d = dict(d)
        d["pdm_widths"] = {int(k): tuple(v) for k, v in d["pdm_widths"].items()}
        for key in ("kernel_sizes", "coupling_hidden"):
            d[key] = tuple(d[key])
        return cls(**d)


def paper(quality: int) -> AINNConfig:
    width = 128 if quality <= 5 else 192
    return AINNConfig("paper", N=width, M=width)


def lite(quality: int) -> AINNConfig:
    """Same architecture, narrower coupling sub-networks (levels 2-4), PDM, mask U-Net and
    CFRM, and a narrower hyper-network (N = 96): about 9.5 M weights, so that three
    qualities ship in under 60 MB of fp16 and a model trains in well under an hour on one
    GPU. M = 128 at every quality.
    """
    return AINNConfig(
        "lite",
        N=96,
        M=128,
        coupling_hidden=(None, 24, 32, 12),
        pdm_widths={4: (32, 32), 3: (16, 32, 32), 2: (16, 16, 32, 32)},
        mask_ch=16,
        cfrm_layers=1,
    )


def tiny(quality: int) -> AINNConfig:
    """For tests: every part present, a few hundred thousand weights."""
    return AINNConfig(
        "tiny",
        N=32,
        M=32,
        coupling_hidden=(8, 8, 8, 8),
        pdm_widths={4: (8, 8), 3: (8, 8, 8), 2: (8, 8, 8, 8)},
        mask_ch=8,
        cfrm_layers=1,
    )


CONFIGS = {"paper": paper, "lite": lite, "tiny": tiny}


def get_config(name: str, quality: int) -> AINNConfig:
    if name not in CONFIGS:
        raise OptionError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    if not 1 <= quality <= 8:
        raise OptionError(f"quality must be in 1..8, got {quality}")
    return CONFIGS[name](quality)
