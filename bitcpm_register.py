"""Registers every bitcpm-ms class with MindFormers (for run_mindformer.py --register_path).

MindFormers' `auto_register: bitcpm_register.<Class>` imports this file from REGISTER_PATH; the
imports below register the model, config, train-step wrapper, callbacks and tokenizer.
"""
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM  # noqa: F401
from bitcpm_ms.training import (BitCPMCheckpointMonitor, BitCPMMetricsMonitor, BitCPMTrainOneStepCell,  # noqa: F401
                                StopAtStep)
from bitcpm_ms.data.mf_tokenizer import BitCPMTokenizer  # noqa: F401
