"""BitCPM (MiniCPM architecture) on MindFormers' LLaMA; importing registers the classes."""
from .bitcpm_config import BitCPMConfig, CPU_SAFE_SETTINGS
from .bitcpm import BitCPMForCausalLM, ScaleOutput, ScaledResidualAdd

__all__ = ["BitCPMConfig", "BitCPMForCausalLM", "ScaleOutput", "ScaledResidualAdd", "CPU_SAFE_SETTINGS"]
