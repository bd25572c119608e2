"""`--run_mode predict`: continue a prompt with a trained checkpoint (greedy decoding).

A plain full-recompute decoder: the prompt is right-padded to the model's seq_length so one
graph (one compilation) serves every step; causal masking makes padding invisible to the
positions that are read. Good for checking a small model on a laptop; deployment uses the
converted packed model (bitcpm_ms.quant.convert) and MindIR export.
"""
import numpy as np
import mindspore as ms

from .artifacts import Artifacts, load_model


def greedy_generate(net, prompt_ids, max_new_tokens, seq_length, eos_id=None, pad_id=0):
    """Greedy continuation of prompt_ids (list of int); returns the new ids."""
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("empty prompt")
    if len(ids) >= seq_length:
        ids = ids[-(seq_length - 1):]
    new = []
    net.set_train(False)
    for _ in range(max_new_tokens):
        if len(ids) >= seq_length:
            break
        buf = np.full((1, seq_length), pad_id, np.int32)
        buf[0, :len(ids)] = ids
        logits = net(ms.Tensor(buf))[0].asnumpy().reshape(seq_length, -1)   # [seq, vocab]
        nxt = int(np.argmax(logits[len(ids) - 1]))
        ids.append(nxt)
        new.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
    return new


def run_predict(config, art: Artifacts, prompt: str, max_new_tokens: int = 32) -> int:
    from ..data.tokenizer import EOS_ID, PAD_ID, SPTokenizer
    tok = SPTokenizer(art.need_tokenizer())
    mc = config.model.model_config
    mc.batch_size = 1
    net, _ = load_model(config, config.load_checkpoint or art.output_dir)
    new = greedy_generate(net, tok.encode(prompt), max_new_tokens, int(mc.seq_length), eos_id=EOS_ID,
                          pad_id=PAD_ID)
    print(prompt + tok.decode(new), flush=True)
    return 0
