"""The tiny YAML works with MindFormers' own launcher flow (run_mindformer.py --register_path):
the script below does what run_mindformer.py's main() does (in MindFormers 1.9.0 MindFormerConfig
applies the config template itself), and never imports bitcpm_ms; every bitcpm-ms class comes in
through `auto_register: bitcpm_register.BitCPMConfig`."""
import json
import subprocess
import sys

from ..helpers import ROOT, TINY_YAML, write_learnable_mindrecord

SCRIPT = r"""
import os, sys
register_path, yaml_path, data_dir, out_dir = sys.argv[1:5]
os.environ["REGISTER_PATH"] = register_path          # run_mindformer.py --register_path
sys.path.append(register_path)
from mindformers.tools.register import MindFormerConfig
from mindformers.core.context import build_context
from mindformers.trainer import Trainer
from mindformers.utils.file_utils import set_output_path
config = MindFormerConfig(yaml_path)
# run_mindformer.py --train_dataset_dir / --output_dir / --key value overrides
config.train_dataset.data_loader.dataset_dir = data_dir
config.output_dir = out_dir
mc = config.model.model_config
mc.hidden_size, mc.num_layers, mc.seq_length, mc.vocab_size, mc.intermediate_size, mc.dim_model_base = \
    64, 2, 64, 512, 128, 16
for cb in config.callbacks:
    if cb["type"] == "StopAtStep":
        cb["stop_step"] = 6
    if cb["type"] == "BitCPMMetricsMonitor":
        cb["log_interval"] = 3
        cb["output_dir"] = out_dir
set_output_path(config.output_dir)
build_context(config)
trainer = Trainer(config)
trainer.train()
assert "bitcpm_ms" in sys.modules      # pulled in by auto_register only
from mindformers.tools.register import MindFormerRegister, MindFormerModuleType
print("QAT_LAYERS", sum(type(c).__name__ == "TernaryLinear" for _, c in trainer.trainer.network.cells_and_names()))
"""


def test_tiny_yaml_trains_under_run_mindformer_flow(tmp_path):
    # with the actual_seq_len column: the YAML masks packed documents and names the column itself
    write_learnable_mindrecord(str(tmp_path / "train.mindrecord"), n_samples=64, seq_length=64, vocab=512,
                               documents=True)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", SCRIPT, ROOT, TINY_YAML, str(tmp_path), str(out)],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r["step"] for r in records if "step" in r]
    assert steps == [1, 3, 6]          # StopAtStep stopped it; our callback logged it
    assert "QAT_LAYERS 14" in res.stdout
