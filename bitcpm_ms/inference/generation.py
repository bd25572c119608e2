"""The generation loop: batch of prompts -> prefill -> decode steps with sampling, stop rules, streaming.

    from bitcpm_ms.inference import CachedLM, generate
    out = generate(CachedLM(model), [ids_a, ids_b], max_new_tokens=64, temperature=0.7, top_p=0.7,
                   seed=0, eos_token_id=2, decode=tokenizer.decode, stop_strings=["\\n\\n"])
    # eos_token_id may be a list: a row ends at the first of them (MiniCPM4: [2, 73440])
    out.tokens, out.texts, out.finish_reasons, out.stats.decode_tokens_per_s

Prompts of different lengths share one batch: they are right-padded to the prompt bucket, each row
has its own position, and its cache slots beyond its position are masked, so a row's result does
not depend on the others (tested: batch == one by one). Sampling runs on the host in numpy
(sampling.py); the graphs return logits of the last position only.

Requests the model cannot serve are refused with a `GenerationError` naming the problem: an empty
batch or prompt, an id outside the vocabulary, a prompt longer than the context (refused, not
truncated), or prompt + max_new_tokens past the context.
"""
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence

import numpy as np

from .sampling import GenerationConfig, GenerationError, next_token
from .streaming import IncrementalText


@dataclass
class GenerationStats:
    prompts: int = 0
    prompt_tokens: int = 0         # real (unpadded) prompt tokens
    prefill_seconds: float = 0.0   # prefill graph calls + cache writes
    decode_tokens: int = 0         # tokens produced by decode steps and kept (a multi-step call's tokens
                                   # past a row's stop are dropped and not counted)
    decode_seconds: float = 0.0    # step graph calls + cache writes
    decode_steps: int = 0          # step graph calls (one or CachedLM.decode_steps tokens each)
    host_seconds: float = 0.0      # sampling, detokenization, streaming
    compile_seconds: float = 0.0   # graph compilation (first call per shape), excluded above

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0

    def add(self, other: "GenerationStats"):
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class GenerationOutput:
    tokens: List[List[int]]                 # new ids per prompt (the EOS id included when it ended the row)
    finish_reasons: List[str]               # "eos", "stop" (a stop string) or "length"
    texts: Optional[List[str]] = None       # when a decode function was given (cut before a stop string)
    seed: Optional[int] = None              # the seed used (drawn when the config had none)
    stats: GenerationStats = field(default_factory=GenerationStats)


def check_prompts(prompts, cfg: GenerationConfig, context: int, vocab_size: int) -> List[List[int]]:
    """The prompts as lists of ints, or a GenerationError naming the first problem."""
    if len(prompts) and np.ndim(prompts[0]) == 0:
        prompts = [prompts]                                     # one prompt given as a flat list
    rows = [[int(t) for t in p] for p in prompts]
    if not rows:
        raise GenerationError("no prompts given")
    for i, ids in enumerate(rows):
        if not ids:
            raise GenerationError(f"prompt {i} is empty: give at least one token")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise GenerationError(f"prompt {i} has token id {bad[0]} outside the vocabulary (0..{vocab_size - 1})")
        if len(ids) > context:
            raise GenerationError(f"prompt {i} has {len(ids)} tokens, more than the context of {context}; "
                                  "shorten it (prompts are not truncated)")
        if len(ids) + cfg.max_new_tokens > context:
            raise GenerationError(f"max_new_tokens {cfg.max_new_tokens} runs past the context: prompt {i} has "
                                  f"{len(ids)} tokens and the context is {context} "
                                  f"(at most {context - len(ids)} new tokens)")
    return rows


def generate(lm, prompts, config: GenerationConfig = None, streamer=None,
             decode: Callable[[List[int]], str] = None, **kwargs) -> GenerationOutput:
    """Generate for a batch of prompts (token id lists) with `lm`: a CachedLM, loaded MindIR graphs, or
    a BitCPMForCausalLM (its CachedLM is built on first use and kept on the model).

    kwargs override fields of `config` (MindFormers style: generate(ids, max_new_tokens=64, top_p=0.7)).
    streamer: an object with put(row, token_id, text) and end(); text needs `decode`."""
    cfg = replace(config or GenerationConfig(), **kwargs) if kwargs or config is None else config
    cfg.validate()
    lm = as_decoder(lm)
    if cfg.stop_strings and decode is None:
        raise GenerationError("stop_strings need a decode function (token ids -> text)")
    rows = check_prompts(prompts, cfg, lm.context, lm.info.vocab_size)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(32)
    stats = GenerationStats(prompts=len(rows), prompt_tokens=sum(len(r) for r in rows))
    compiled_before = lm.compile_seconds

    batch, lengths = len(rows), np.array([len(r) for r in rows], np.int32)
    p_len, s_len = lm.shapes(batch, int(lengths.max()), int(lengths.max()) + cfg.max_new_tokens - 1)
    cache = lm.new_cache(batch, s_len)
    lm.warm_up(batch, p_len, cache)
    input_ids = np.full((batch, p_len), cfg.pad_token_id, np.int32)
    for b, ids in enumerate(rows):
        input_ids[b, :len(ids)] = ids

    t = time.perf_counter()
    logits, keys, values = lm.prefill(input_ids, lengths)
    cache.write_prompt(keys, values)
    stats.prefill_seconds = time.perf_counter() - t

    rngs = [np.random.default_rng(seed) for _ in rows]
    texts = [IncrementalText(decode, cfg.stop_strings) for _ in rows] if decode is not None else None
    seen = [list(r) for r in rows]
    new = [[] for _ in rows]
    reasons: List[Optional[str]] = [None] * batch
    positions = lengths.copy()
    # greedy without a repetition penalty needs no host logits: K steps per graph call (CachedLM.multi_step)
    multi = cfg.greedy and cfg.repetition_penalty == 1.0 and getattr(lm, "decode_steps", 1) > 1
    chunk = None                       # [B, K] tokens of the last multi-step call
    while True:
        t = time.perf_counter()
        for b in range(batch):
            if reasons[b] is not None:
                continue
            row = chunk[b] if chunk is not None else [next_token(logits[b], seen[b], cfg, rngs[b])]
            for token in row:
                reasons[b] = _take(b, int(token), cfg, new, seen, texts, streamer)
                stats.decode_tokens += chunk is not None
                if reasons[b] is not None:
                    break
        stats.host_seconds += time.perf_counter() - t
        active = [b for b in range(batch) if reasons[b] is None]
        if not active:
            break
        step_ids = np.array([[new[b][-1] if reasons[b] is None else cfg.pad_token_id] for b in range(batch)], np.int32)
        step_pos = np.minimum(positions, s_len - 1).astype(np.int32)    # finished rows: any valid slot
        t = time.perf_counter()
        if multi:
            chunk = lm.multi_step(step_ids, step_pos, cache)             # writes the cache itself
        else:
            logits, keys, values = lm.step(step_ids, step_pos, cache)
            cache.write_step(keys, values, step_pos)
            stats.decode_tokens += len(active)
        stats.decode_seconds += time.perf_counter() - t
        stats.decode_steps += 1
        positions += chunk.shape[1] if multi else 1
    if streamer is not None:
        for b in range(batch):
            if texts is not None:
                streamer.put(b, -1, texts[b].finish())
        streamer.end()
    stats.compile_seconds = lm.compile_seconds - compiled_before
    return GenerationOutput(tokens=new, finish_reasons=reasons, seed=seed, stats=stats,
                            texts=[t.text for t in texts] if texts is not None else None)


def as_decoder(lm):
    """`lm` if it already has the decoding interface, else the (cached) CachedLM of a model Cell."""
    if hasattr(lm, "prefill") and hasattr(lm, "step"):
        return lm
    cached = getattr(lm, "_bitcpm_cached_lm", None)
    if cached is None:
        from .runtime import CachedLM
        cached = CachedLM(lm)
        object.__setattr__(lm, "_bitcpm_cached_lm", cached)
    return cached


def _take(b, token, cfg, new, seen, texts, streamer) -> Optional[str]:
    """Append row b's token; returns its finish reason, or None while it goes on."""
    new[b].append(token)
    seen[b].append(token)
    is_eos = token in cfg.eos_token_ids
    piece = ""
    if texts is not None and not is_eos:
        piece = texts[b].push(token)
    if streamer is not None:
        streamer.put(b, token, piece)
    if is_eos:
        return "eos"
    if texts is not None and texts[b].stopped:
        return "stop"
    return "length" if len(new[b]) >= cfg.max_new_tokens else None


def generate_batches(lm, prompts: Sequence[Sequence[int]], batch_size: int, config: GenerationConfig,
                     decode=None, on_batch=None) -> GenerationOutput:
    """generate() over consecutive batches of at most batch_size prompts; stats are summed.
    on_batch(first_index, GenerationOutput) is called after each batch (e.g. to print it)."""
    if batch_size < 1:
        raise GenerationError(f"batch size must be >= 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts:
        raise GenerationError("no prompts given")
    if config.seed is None:                     # one seed for the whole run, reported once
        config = replace(config, seed=secrets.randbits(32))
    total = GenerationOutput(tokens=[], finish_reasons=[], texts=[] if decode is not None else None,
                             seed=config.seed)
    for start in range(0, len(prompts), batch_size):
        out = generate(lm, prompts[start:start + batch_size], config, decode=decode)
        total.tokens += out.tokens
        total.finish_reasons += out.finish_reasons
        if decode is not None:
            total.texts += out.texts
        total.stats.add(out.stats)
        if on_batch is not None:
            on_batch(start, out)
    return total
