"""Building blocks of A-INN, each module in the file named after its part of the paper."""

from .cfrm import CFRM, MultiScaleCFRM
from .fdsm import FrequencyDecomposition, FrequencySynthesis, MaskUNet
from .invertible import AffineCoupling, Bottleneck, InvConv1x1, InvertibleLevel, InvertibleNetwork, Squeeze2x2
from .pdm import DenoiseUNet, ProgressiveDenoiser

__all__ = [
    "AffineCoupling",
    "Bottleneck",
    "CFRM",
    "DenoiseUNet",
    "FrequencyDecomposition",
    "FrequencySynthesis",
    "InvConv1x1",
    "InvertibleLevel",
    "InvertibleNetwork",
    "MaskUNet",
    "MultiScaleCFRM",
    "ProgressiveDenoiser",
    "Squeeze2x2",
]
