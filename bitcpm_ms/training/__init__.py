"""Training glue registered with MindFormers: train-step wrapper, metrics and checkpoint callbacks,
the distillation network, and (from bitcpm_ms.fused) the CpuFusedAdamW optimizer."""
from ..fused.optim import CpuFusedAdamW
from .wrapper import BitCPMTrainOneStepCell
from .metrics import BitCPMMetricsMonitor, StopAtStep
from .checkpointing import BitCPMCheckpointMonitor
from .distill import BitCPMDistillForCausalLM

__all__ = ["BitCPMTrainOneStepCell", "BitCPMMetricsMonitor", "StopAtStep", "BitCPMCheckpointMonitor", "CpuFusedAdamW",
           "BitCPMDistillForCausalLM"]
