"""`--run_mode predict`: continue prompts with a trained checkpoint.

`run_predict` generates with the KV-cache decoder of bitcpm_ms.inference (prefill + decode-step
graphs, sampling, streaming; `--packed true` runs the packed ternary kernels, `--decode_graphs DIR`
the exported MindIR graphs) and prints prefill / decode tokens per second on stderr.

The tokenizer is `load_tokenizer(art.need_tokenizer())`: our SentencePiece model (no BOS, stop at
`</s>`) or a Hugging Face tokenizer directory (MiniCPM4: BOS added, chat tokens parsed, stop at any of
its eos ids, e.g. `</s>` and `<|im_end|>`). `--chat` / `--chat_file` render the messages with the
tokenizer's chat template (with the generation prompt), encode that text as the tokenizer encodes
any text (BOS as it says, as vLLM and llama.cpp do), and print only the reply: the prompt is not
echoed, special tokens are not printed, generation ends at the first eos id.

`greedy_generate` is the plain full-recompute decoder it replaced, kept as the reference the tests
compare against: the prompt is right-padded to the model's seq_length so one graph serves every
step; causal masking makes padding invisible to the positions that are read.
"""
import argparse
import sys

import numpy as np
import mindspore as ms

from ..errors import ConfigError
from .artifacts import Artifacts, load_model, model_checkpoint
from .predict_args import add_predict_arguments, generation_config, is_chat, read_chat, read_prompts
from ..data.hf_tokenizer import load_tokenizer
from ..data.tokenizer import PAD_ID
from ..inference import CachedLM, TextStreamer, generate, generate_batches, load_decode_graphs
from ..quant.convert import convert_model


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


def _default_args(prompt, max_new_tokens):
    p = argparse.ArgumentParser()
    add_predict_arguments(p)
    args = p.parse_args([])
    args.prompt, args.max_new_tokens, args.packed = prompt, max_new_tokens, False
    return args


def _decoder(config, art, args):
    """The CachedLM of the configured checkpoint (packed on request), or the exported graphs."""
    if args.decode_graphs:
        return load_decode_graphs(args.decode_graphs)
    config.model.model_config.batch_size = 1
    net, _ = load_model(config, model_checkpoint(config, art))
    if args.packed:
        if not config.model.model_config.qat_config.enabled:
            raise ConfigError("--packed true needs a ternary model, but quant.enabled is false")
        convert_model(net)
    return CachedLM(net, decode_steps=args.decode_steps, head_dtype=args.head_dtype, kv_dtype=args.kv_dtype)


def run_predict(config, art: Artifacts, prompt: str, max_new_tokens: int = 32, args=None) -> int:
    """Generate for --prompt (streamed), each line of --prompt_file (printed per batch), or the reply to
    --chat / --chat_file (streamed, without the prompt)."""
    args = args if args is not None else _default_args(prompt, max_new_tokens)
    path = art.need_tokenizer()
    tok = load_tokenizer(path)
    cfg = generation_config(args, eos_token_id=list(tok.eos_token_ids), pad_token_id=PAD_ID)

    def decode(ids):
        return tok.decode(ids, skip_special_tokens=True)

    chat = is_chat(args)
    if chat:
        if not getattr(tok, "chat_template", None):
            raise ConfigError(f"--chat needs a tokenizer with a chat template; {path} has none (a Hugging Face "
                              "tokenizer directory whose tokenizer_config.json has a chat_template)")
        texts = [tok.apply_chat_template(read_chat(args), add_generation_prompt=True)]
    else:
        texts = read_prompts(args)
    prompts = [tok.encode(t) for t in texts]
    lm = _decoder(config, art, args)
    if chat:
        out = generate(lm, prompts, cfg, streamer=TextStreamer(), decode=decode)
    elif args.prompt_file is None:
        print(texts[0], end="", flush=True)
        out = generate(lm, prompts, cfg, streamer=TextStreamer(), decode=decode)
    else:
        def show(start, batch):
            for i, text in enumerate(batch.texts):
                print(f"[{start + i}] {texts[start + i]}{text}", flush=True)
        out = generate_batches(lm, prompts, args.predict_batch_size, cfg, decode=decode, on_batch=show)
    s = out.stats
    print(f"prefill: {s.prompt_tokens} tokens, {s.prefill_tokens_per_s:,.0f} tok/s | decode: {s.decode_tokens} tokens, "
          f"{s.decode_tokens_per_s:,.1f} tok/s in {s.decode_calls} graph calls | graph compile {s.compile_seconds:.1f} s | "
          f"{'packed' if args.packed else 'MindIR' if args.decode_graphs else 'fake-quant'} | seed {out.seed}"
          + (f" | {out.finish_reasons[0]}" if chat else ""),
          file=sys.stderr, flush=True)
    return 0
