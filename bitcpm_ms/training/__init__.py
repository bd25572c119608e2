"""Training glue registered with MindFormers: train-step wrapper, metrics and checkpoint callbacks."""
from .wrapper import BitCPMTrainOneStepCell
from .metrics import BitCPMMetricsMonitor, StopAtStep
from .checkpointing import BitCPMCheckpointMonitor

__all__ = ["BitCPMTrainOneStepCell", "BitCPMMetricsMonitor", "StopAtStep", "BitCPMCheckpointMonitor"]
