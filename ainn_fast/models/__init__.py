from .ainn import AINN, QUANTIZATIONS, STRIDE
from .config import CONFIGS, AINNConfig, get_config

__all__ = ["AINN", "AINNConfig", "CONFIGS", "QUANTIZATIONS", "STRIDE", "get_config"]
