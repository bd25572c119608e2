"""Training glue registered with MindFormers: train-step wrapper and metrics callback."""
from .wrapper import BitCPMTrainOneStepCell
from .metrics import BitCPMMetricsMonitor, StopAtStep
from .distill import BitCPMDistillForCausalLM

__all__ = ["BitCPMTrainOneStepCell", "BitCPMMetricsMonitor", "StopAtStep", "BitCPMDistillForCausalLM"]
