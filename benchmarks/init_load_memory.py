"""Peak memory of loading an init checkpoint into a built model: MindSpore's reader vs bitcpm-ms'.

Every rank of a training job loads `init_from_checkpoint` (the full-precision model) into its own
network before compilation. The old `load_weights` called `mindspore.load_checkpoint(path)`, which
for a .ckpt reads the whole file into one bytes object and parses all of it before anything is
filtered, then `load_param_into_net`; the new one reads one parameter at a time
(`training/checkpoint_reader.py`). Measured in a fresh process per case: the model is built
(1B YAML's widths, fewer layers: the embedding and head dominate), the peak RSS is reset
(/proc/self/clear_refs), the checkpoint is loaded, and the growth of the peak over the built
model is recorded.
  * weights: a weights-only fp32 file (what run/convert_hf.py from_hf writes for the init);
  * training: the same weights plus two Adam moments (a training run's checkpoint, e.g. a teacher).

    python3 -m benchmarks.init_load_memory [--layers 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.machine import write_results

SHAPE = dict(hidden_size=1536, num_heads=12, n_kv_heads=2, intermediate_size=5632, vocab_size=73448,
             dim_model_base=256, seq_length=64, batch_size=1, scale_emb=12, scale_depth=1.4)

_CHILD = r"""
import json, sys
import mindspore as ms
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
mode, path, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape = json.loads(sys.argv[4])

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

net = BitCPMForCausalLM(BitCPMConfig(num_layers=layers, **shape))
if mode in ("write_weights", "write_training"):
    from mindspore import Tensor
    import numpy as np
    items = [{"name": p.name, "data": p} for p in net.get_parameters()]
    if mode == "write_training":
        items += [{"name": f"adam_{m}.{p.name}", "data": Tensor(np.zeros(p.shape, np.float32))}
                  for m in ("m", "v") for p in net.get_parameters()]
    ms.save_checkpoint(items, path)
    sys.exit()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                                  # reset VmHWM to the current RSS
before = status("VmRSS")
if mode == "mindspore":                           # the old load_weights
    params = ms.load_checkpoint(path)
    wanted = {p.name for p in net.get_parameters()}
    ms.load_param_into_net(net, {k: params[k] for k in wanted}, strict_load=True)
else:
    from bitcpm_ms.training.checkpoint_loading import load_weights
    load_weights(net, path)
print(json.dumps({"model_mib": sum(p.nbytes for p in net.get_parameters()) / 2**20,
                  "peak_growth_mib": status("VmHWM") - before}))
"""


def child(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], env=env, capture_output=True, text=True,
                         check=True, timeout=3600).stdout
    rows = [line for line in out.splitlines() if line.startswith("{")]      # MindFormers also prints
    return json.loads(rows[-1]) if rows else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    shape = json.dumps(SHAPE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("weights", "training"):
            path = os.path.join(tmp, f"{kind}.ckpt")
            child(f"write_{kind}", path, args.layers, shape)
            size = os.path.getsize(path) / 2**20
            for reader in ("mindspore", "bitcpm_ms"):
                r = child(reader, path, args.layers, shape)
                rows.append(dict(file=kind, file_mib=round(size, 1), reader=reader, model_mib=round(r["model_mib"], 1),
                                 peak_growth_mib=round(r["peak_growth_mib"], 1),
                                 growth_over_file=round(r["peak_growth_mib"] / size, 2)))
                print(rows[-1], flush=True)
            os.remove(path)
    write_results({"shape": dict(SHAPE, num_layers=args.layers), "results": rows},
                  os.path.join(ROOT, "benchmarks", "results", "init_load_memory.json"))


if __name__ == "__main__":
    main()
