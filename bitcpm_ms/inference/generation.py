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
    decode_calls: int = 0          # step graph calls (one token, or CachedLM.decode_steps tokens, per row)
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


@dataclass
class _Batch:
    """The state of one generate() call that both decode loops share (rows in prompt order)."""
    cfg: GenerationConfig
    lm: object
    cache: object
    stats: GenerationStats
    rows: List[List[int]]
    texts: Optional[List[IncrementalText]]
    streamer: object
    positions: np.ndarray                   # [B] int32: the next cache slot of each row
    seen: List[List[int]] = field(default_factory=list)
    new: List[List[int]] = field(default_factory=list)
    reasons: List[Optional[str]] = field(default_factory=list)

    def __post_init__(self):
        self.seen = [list(r) for r in self.rows]
        self.new = [[] for _ in self.rows]
        self.reasons = [None] * len(self.rows)

    def take(self, b: int, tokens) -> int:
        """Append row b's tokens up to its stop; returns how many it kept."""
        kept = 0
        for token in tokens:
            kept += 1
            self.reasons[b] = self._append(b, int(token))
            if self.reasons[b] is not None:
                break
        return kept

    def _append(self, b: int, token: int) -> Optional[str]:
        """Append row b's token (streamed with its text); returns its finish reason, or None while it goes on."""
        self.new[b].append(token)
        self.seen[b].append(token)
        is_eos = token in self.cfg.eos_token_ids
        piece = ""
        if self.texts is not None and not is_eos:
            piece = self.texts[b].push(token)
        if self.streamer is not None:
            self.streamer.put(b, token, piece)
        if is_eos:
            return "eos"
        if self.texts is not None and self.texts[b].stopped:
            return "stop"
        return "length" if len(self.new[b]) >= self.cfg.max_new_tokens else None

    def active(self) -> List[int]:
        return [b for b in range(len(self.rows)) if self.reasons[b] is None]

    def step_inputs(self):
        """(ids [B, 1] int32: each row's last token, pad for finished rows; positions [B] int32)."""
        pad = self.cfg.pad_token_id
        ids = np.array([[self.new[b][-1] if self.reasons[b] is None else pad] for b in range(len(self.rows))],
                       np.int32)
        return ids, np.minimum(self.positions, self.cache.length - 1).astype(np.int32)  # finished rows: any slot


def generate(lm, prompts, config: GenerationConfig = None, streamer=None,
             decode: Callable[[List[int]], str] = None, **kwargs) -> GenerationOutput:
    """Generate for a batch of prompts (token id lists) with `lm`: a CachedLM, loaded MindIR graphs, or
    a BitCPMForCausalLM (its CachedLM is built on first use and kept on the model).

    kwargs override fields of `config` (MindFormers style: generate(ids, max_new_tokens=64, top_p=0.7)).
    streamer: an object with put(row, token_id, text) and end(); text needs `decode`.

    Greedy decoding without a repetition penalty needs no logits on the host, so with a CachedLM
    that decodes K > 1 tokens per graph call (`CachedLM.decode_steps`) it runs the multi-step loop;
    everything else runs the sampled loop, one token per row per graph call."""
    cfg = replace(config or GenerationConfig(), **kwargs) if kwargs or config is None else config
    cfg.validate()
    lm = as_decoder(lm)
    if cfg.stop_strings and decode is None:
        raise GenerationError("stop_strings need a decode function (token ids -> text)")
    rows = check_prompts(prompts, cfg, lm.context, lm.info.vocab_size)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(32)
    stats = GenerationStats(prompts=len(rows), prompt_tokens=sum(len(r) for r in rows))
    compiled_before = lm.compile_seconds
    run, logits = _prefill(lm, rows, cfg, stats, streamer,
                           [IncrementalText(decode, cfg.stop_strings) for _ in rows] if decode is not None else None)
    if cfg.greedy and cfg.repetition_penalty == 1.0 and getattr(lm, "decode_steps", 1) > 1:
        _greedy_multi_step_loop(run, logits)
    else:
        _sampled_loop(run, logits, seed)
    if streamer is not None:
        for b in range(len(rows)):
            if run.texts is not None:
                streamer.put(b, -1, run.texts[b].finish())
        streamer.end()
    stats.compile_seconds = lm.compile_seconds - compiled_before
    return GenerationOutput(tokens=run.new, finish_reasons=run.reasons, seed=seed, stats=stats,
                            texts=[t.text for t in run.texts] if run.texts is not None else None)


def _prefill(lm, rows, cfg, stats, streamer, texts):
    """Right-pad the prompts to the prompt bucket, run the prompt pass, which fills the cache.
    Returns the batch state and the logits of each row's last prompt position [B, vocab]."""
    batch, lengths = len(rows), np.array([len(r) for r in rows], np.int32)
    p_len, s_len = lm.shapes(batch, int(lengths.max()), int(lengths.max()) + cfg.max_new_tokens - 1)
    cache = lm.new_cache(batch, s_len)
    lm.warm_up(batch, p_len, cache)
    input_ids = np.full((batch, p_len), cfg.pad_token_id, np.int32)        # [B, P] right-padded
    for b, ids in enumerate(rows):
        input_ids[b, :len(ids)] = ids
    t = time.perf_counter()
    logits = lm.prefill_into(input_ids, lengths, cache)
    stats.prefill_seconds = time.perf_counter() - t
    return _Batch(cfg, lm, cache, stats, rows, texts, streamer, lengths.copy()), logits


def _sampled_loop(run: _Batch, logits, seed: int) -> None:
    """One token per row per graph call, chosen on the host from the logits (sampling.next_token:
    temperature, top-k/p, repetition penalty, or argmax), each row with its own generator."""
    rngs = [np.random.default_rng(seed) for _ in run.rows]
    while True:
        t = time.perf_counter()
        for b in run.active():
            run.take(b, [next_token(logits[b], run.seen[b], run.cfg, rngs[b])])
        run.stats.host_seconds += time.perf_counter() - t
        active = run.active()
        if not active:
            return
        step_ids, step_pos = run.step_inputs()
        t = time.perf_counter()
        logits, keys, values = run.lm.step(step_ids, step_pos, run.cache)
        run.cache.write_step(keys, values, step_pos)
        run.stats.decode_seconds += time.perf_counter() - t
        run.stats.decode_tokens += len(active)
        run.stats.decode_calls += 1
        run.positions += 1


def _greedy_multi_step_loop(run: _Batch, logits) -> None:
    """K greedy tokens per row per graph call (CachedLM.multi_step: argmax in the graph, the cache
    written by the layer ops). The first token comes from the prefill's logits; a row's tokens past
    its stop are dropped and not counted."""
    t = time.perf_counter()
    for b in run.active():
        run.take(b, [next_token(logits[b], run.seen[b], run.cfg, None)])    # greedy: no generator
    run.stats.host_seconds += time.perf_counter() - t
    while run.active():
        step_ids, step_pos = run.step_inputs()
        t = time.perf_counter()
        chunk = run.lm.multi_step(step_ids, step_pos, run.cache)           # [B, K] tokens
        run.stats.decode_seconds += time.perf_counter() - t
        run.stats.decode_calls += 1
        run.positions += chunk.shape[1]
        t = time.perf_counter()
        for b in run.active():
            run.stats.decode_tokens += run.take(b, chunk[b])
        run.stats.host_seconds += time.perf_counter() - t


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
