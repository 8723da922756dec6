from .ainn import AINN, STRIDE
from .config import CONFIGS, AINNConfig, get_config

__all__ = ["AINN", "AINNConfig", "CONFIGS", "STRIDE", "get_config"]
