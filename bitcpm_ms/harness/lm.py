"""The lm-eval model `bitcpm`: a trained bitcpm-ms checkpoint (full precision, fake-quant ternary, or
packed 2-bit kernels) behind lm-eval's three request types.

    lm_eval --model bitcpm --model_args config=RUN/config_resolved.json,checkpoint=RUN,packed=true ...

* `loglikelihood` (TemplateLM): lm-eval's own context/continuation split (`_encode_pair`: the
  continuation is the tail of encode(context + continuation)), requests sorted longest first and
  scored in batches of `batch_size` rows of the model's fixed window (`scoring.py`);
* `loglikelihood_rolling`: lm-eval's rolling windows of `max_length` tokens, each token scored once;
* `generate_until`: the KV-cache decoder of bitcpm_ms.inference (greedy unless the task samples), stopping
  at the first `until` string (the text is cut before it) or after `max_gen_toks` tokens.

Token ids: a text starts like a document starts in training. Our SentencePiece model adds no BOS and
documents follow an end-of-document id, so the prefix is `</s>`; a Hugging Face tokenizer with
`add_bos_token` (MiniCPM4) gets its BOS. lm-eval uses the same id for an empty context.
"""
from typing import List, Tuple

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm
from lm_eval.utils import simple_parse_args_string

from ..data.hf_tokenizer import HFTokenizer, load_tokenizer
from ..errors import ConfigError
from .model_args import ModelArgs, check_model_args
from .scoring import model_input, pad_rows, rolling_requests, score_row
from ..app.console import import_mindformers
from ..inference import GenerationConfig, generate


class BitCPMLM(TemplateLM):
    """See the module docstring. `BitCPMLM(config=..., checkpoint=..., packed=..., batch_size=..., max_length=...)`
    (lm-eval's path) loads a run; `BitCPMLM.from_model(net, tokenizer, ...)` wraps a model in memory."""

    backend = "causal"

    def __init__(self, **kwargs):
        super().__init__()
        args = check_model_args(**kwargs)
        net, tokenizer = _load(args)
        self._setup(net, tokenizer, args.batch_size)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """lm-eval's constructor path (create_from_arg_string ends here too). Its CLI always passes
        --batch_size (default 1) beside model_args: batch_size= in model_args wins when both are given."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def from_model(cls, net, tokenizer, batch_size: int = 8) -> "BitCPMLM":
        """An lm-eval model over a BitCPMForCausalLM already built (its seq_length is the window)."""
        self = cls.__new__(cls)
        TemplateLM.__init__(self)
        self._setup(net, tokenizer, batch_size)
        return self

    def _setup(self, net, tokenizer, batch_size: int):
        import mindspore as ms
        self._ms = ms
        self.net = net
        self.net.set_train(False)
        self.tokenizer_ = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(net.config.seq_length)       # the graph's fixed window
        self.vocab_size = int(net.config.vocab_size)
        self.max_gen_toks = 256
        self.calls = 0                                      # forward graph calls (tests, speed)

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer_.eos_token_ids[0])

    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer_
        return int(tok.bos_id) if getattr(tok, "add_bos", False) and tok.bos_id is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer_, "model_path", type(self.tokenizer_).__name__))

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> List[int]:
        """Ids of `string`, after the prefix id unless add_special_tokens is False (module docstring)."""
        tok = self.tokenizer_
        ids = list(tok.encode(string, add_special_tokens=False) if isinstance(tok, HFTokenizer) else tok.encode(string))
        return ids if add_special_tokens is False else [self.prefix_token_id] + ids

    def tok_decode(self, ids) -> str:
        return self.tokenizer_.decode(list(ids), skip_special_tokens=True)

    # ------------------------------------------------------------------ log-likelihood
    def _logits(self, rows: List[List[int]]) -> np.ndarray:
        """Logits [len(rows), max_length, V] of right-padded rows (one graph shape for every call)."""
        ids = pad_rows(rows, self.max_length, self.batch_size, pad_id=0)
        out = self.net(self._ms.Tensor(ids))[0].asnumpy()
        self.calls += 1
        return out.reshape(self.batch_size, self.max_length, -1)[:len(rows)]            # [B, T, V]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        """requests: ((context, continuation) or None, context ids, continuation ids); longest first."""
        prepared = [model_input(ctx, cont, self.max_length) for _, ctx, cont in requests]
        order = sorted(range(len(requests)), key=lambda i: (-len(prepared[i][0]), i))
        results = [None] * len(requests)
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm, desc="bitcpm loglikelihood"):
            batch = order[start:start + self.batch_size]
            logits = self._logits([prepared[i][0] for i in batch])
            for row, i in enumerate(batch):
                results[i] = score_row(logits[row], len(prepared[i][0]), requests[i][2])
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="bitcpm loglikelihood_rolling"):
            (text,) = req.args
            windows = rolling_requests(self.tok_encode(text, add_special_tokens=False), self.prefix_token_id,
                                       self.max_length)
            total = sum(lp for lp, _ in self._loglikelihood_tokens([(None, c, t) for c, t in windows],
                                                                    disable_tqdm=True))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        """Requests grouped by their generation settings, batch_size prompts per decoder call."""
        groups = {}
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kw = normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self.max_gen_toks)
            until = tuple(handle_stop_sequences(kw.pop("until", None), eos=self.tok_decode([self.eot_token_id])
                                                or None))
            key = (until, int(kw.pop("max_gen_toks")), bool(kw.pop("do_sample", False)),
                   float(kw.pop("temperature", 0.0) or 0.0), float(kw.pop("top_p", 1.0) or 1.0),
                   int(kw.pop("top_k", 0) or 0))
            groups.setdefault(key, []).append(i)
        out = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="bitcpm generate_until")
        for key, idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                batch = idx[start:start + self.batch_size]
                texts = self._generate([requests[i].args[0] for i in batch], *key)
                for i, text in zip(batch, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        return out

    def _generate(self, contexts, until, max_gen_toks, do_sample, temperature, top_p, top_k) -> List[str]:
        # the window holds prompt + generation: at most max_length - 1 new tokens, the prompt keeps its end
        new = max(1, min(max_gen_toks, self.max_length - 1))
        prompts = [self.tok_encode(c)[-(self.max_length - new):] for c in contexts]
        cfg = GenerationConfig(max_new_tokens=new, do_sample=do_sample and temperature > 0,
                               temperature=temperature if do_sample else 0.0, top_p=top_p, top_k=top_k, seed=1234,
                               eos_token_id=list(self.tokenizer_.eos_token_ids), pad_token_id=0, stop_strings=until)
        result = generate(self.net, prompts, cfg, decode=self.tok_decode)
        return [cut_at_stop(text, until) for text in result.texts]


def cut_at_stop(text: str, until) -> str:
    """The text before the first occurrence of any stop string (lm-eval's contract)."""
    cut = min((text.find(s) for s in until if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def _load(args: ModelArgs):
    """(model, tokenizer) of a run's config and checkpoint, as `bitcpm-train --run_mode eval` builds them."""
    import_mindformers()
    import mindspore as ms
    from ..app.artifacts import load_model, model_checkpoint, resolve
    from ..training.checkpoint_loading import find_checkpoint
    from ..app.config import load_config
    overrides = {}
    if args.max_length is not None:
        overrides["model.model_config.seq_length"] = args.max_length
    config = load_config(args.config, overrides)
    mc = config.model.model_config
    if args.packed and not mc.qat_config.enabled:
        raise ConfigError("model_args packed=true needs a ternary model, but the config's quant.enabled is false")
    ms.set_context(mode=ms.GRAPH_MODE, device_target=(config.get("context") or {}).get("device_target") or "CPU")
    mc.batch_size = args.batch_size
    art = resolve(config)
    checkpoint = find_checkpoint(args.checkpoint or model_checkpoint(config, art))     # a bad path: named first
    tokenizer = load_tokenizer(art.need_tokenizer())
    if int(tokenizer.vocab_size) > int(mc.vocab_size):
        raise ConfigError(f"tokenizer {art.tokenizer_file} has {tokenizer.vocab_size} ids, more than the model's "
                          f"vocab_size {mc.vocab_size}: it is not this model's tokenizer (set "
                          "processor.tokenizer.vocab_file in the config)")
    net, _ = load_model(config, checkpoint)
    if args.packed:
        from ..quant.convert import convert_model
        convert_model(net)
    return net, tokenizer
