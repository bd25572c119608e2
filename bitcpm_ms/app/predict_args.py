"""The `--run_mode predict` flags of bitcpm-train (generation settings), kept out of cli.py.

Values are checked here, before MindSpore is imported, by building the GenerationConfig they
describe (a bad temperature or top_p fails in a fraction of a second with `error: ...`).

`--chat TEXT` (one user message) and `--chat_file F` (a JSON list of {role, content} messages) are
rendered with the tokenizer's chat template; only the reply is printed. Their sampling defaults are
MiniCPM4's usage example (temperature 0.7, top_p 0.7) unless --temperature / --top_p are given; plain
prompts stay greedy by default.
"""
import json
import os

from ..errors import ConfigError
from ..inference.sampling import GenerationConfig, GenerationError

PREDICT_FLAGS = ("prompt_file", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop", "packed",
                 "predict_batch_size", "decode_graphs", "decode_steps", "head_dtype", "kv_dtype", "chat", "chat_file")
CHAT_TEMPERATURE, CHAT_TOP_P = 0.7, 0.7      # MiniCPM4's model card: generate(..., top_p=0.7, temperature=0.7)


def _true_false(text) -> bool:
    value = str(text).lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ConfigError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes")


def add_predict_arguments(p):
    g = p.add_argument_group("predict mode (KV-cache generation; docs/generation.md)")
    g.add_argument("--prompt_file", default=None, help="prompts, one per line (blank lines skipped)")
    g.add_argument("--chat", default=None,
                   help="a user message for a chat model: rendered with the tokenizer's chat template, "
                        "only the reply is printed")
    g.add_argument("--chat_file", default=None,
                   help='multi-turn chat: a JSON list of {"role": ..., "content": ...} messages')
    g.add_argument("--temperature", type=float, default=None,
                   help=f"0 = greedy (the default; {CHAT_TEMPERATURE} with --chat); > 0 samples")
    g.add_argument("--top_k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--top_p", type=float, default=None,
                   help=f"nucleus sampling, in (0, 1] (1 = off, the default; {CHAT_TOP_P} with --chat)")
    g.add_argument("--repetition_penalty", type=float, default=1.0, help="> 1 discourages repeats (1 = off)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (default: drawn and printed)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--packed", default="false", help="true: run the packed ternary kernels (convert_model)")
    g.add_argument("--predict_batch_size", type=int, default=8, help="prompts per batch for --prompt_file")
    g.add_argument("--decode_steps", type=int, default=None,
                   help="greedy tokens per decode graph call (packed models: default 16; others: 1)")
    g.add_argument("--head_dtype", default="float32", choices=("float32", "float16"),
                   help="lm_head weight precision of the CPU decoding graphs (float16: half the bytes per token)")
    g.add_argument("--kv_dtype", default="float32", choices=("float32", "float16"),
                   help="KV cache precision of the CPU decoding graphs (float16: llama.cpp's default, half the "
                        "cache memory)")
    g.add_argument("--decode_graphs", default=None,
                   help="generate from exported decoding graphs (MindIR directory of bitcpm-export --decode_graphs)")


def is_chat(args) -> bool:
    return getattr(args, "chat", None) is not None or getattr(args, "chat_file", None) is not None


def sampling_defaults(args):
    """Fill --temperature / --top_p the user did not give: chat 0.7 / 0.7, plain prompts greedy."""
    if args.temperature is None:
        args.temperature = CHAT_TEMPERATURE if is_chat(args) else 0.0
    if args.top_p is None:
        args.top_p = CHAT_TOP_P if is_chat(args) else 1.0
    return args


def generation_config(args, eos_token_id=None, pad_token_id=0) -> GenerationConfig:
    """The GenerationConfig of the parsed flags; a ConfigError names a bad value.
    eos_token_id: one id or a list (generation stops at any of them)."""
    sampling_defaults(args)
    try:
        return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                                seed=args.seed, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                                stop_strings=tuple(args.stop))
    except GenerationError as err:
        raise ConfigError(f"--{str(err)}") from None


def check_predict_arguments(args):
    args.packed = _true_false(args.packed)
    generation_config(args)
    if is_chat(args):
        read_chat(args)
    if args.predict_batch_size < 1:
        raise ConfigError(f"--predict_batch_size must be >= 1, got {args.predict_batch_size}")
    if args.decode_steps is not None:
        if args.decode_steps < 1:
            raise ConfigError(f"--decode_steps must be >= 1, got {args.decode_steps}")
        if args.decode_steps > 1 and not args.packed:
            raise ConfigError("--decode_steps > 1 needs --packed true (the multi-step graph runs packed layers)")
        if args.decode_steps > 1 and args.decode_graphs is not None:
            raise ConfigError("--decode_steps > 1 cannot run from --decode_graphs (the exported step makes one token)")
    if args.prompt_file is not None and not os.path.isfile(args.prompt_file):
        raise ConfigError(f"--prompt_file {args.prompt_file} does not exist")
    for flag in ("head_dtype", "kv_dtype"):
        if getattr(args, flag) != "float32" and args.decode_graphs is not None:
            raise ConfigError(f"--{flag} applies to in-process decoding, not to --decode_graphs (exported as built)")
    if args.decode_graphs is not None and not os.path.isdir(args.decode_graphs):
        raise ConfigError(f"--decode_graphs {args.decode_graphs} is not a directory")


def read_prompts(args):
    """The prompt texts: the lines of --prompt_file (blank lines skipped), else [--prompt]."""
    if args.prompt_file is None:
        return [args.prompt]
    with open(args.prompt_file, encoding="utf-8") as f:
        prompts = [line.rstrip("\r\n") for line in f if line.strip()]
    if not prompts:
        raise ConfigError(f"--prompt_file {args.prompt_file} holds no prompt (only blank lines)")
    return prompts


def read_chat(args):
    """The chat messages of --chat (one user turn) or --chat_file (a JSON list of {role, content})."""
    if args.chat is not None and args.chat_file is not None:
        raise ConfigError("--chat and --chat_file are exclusive: give one message or a file of messages")
    if getattr(args, "prompt_file", None) is not None:
        raise ConfigError(f"--{'chat' if args.chat is not None else 'chat_file'} cannot be combined with "
                          "--prompt_file (a chat is one conversation)")
    if args.chat is not None:
        if not args.chat:
            raise ConfigError("--chat is empty: give the user message")
        return [{"role": "user", "content": args.chat}]
    path = args.chat_file
    if not os.path.isfile(path):
        raise ConfigError(f"--chat_file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            messages = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"--chat_file {path} is not a JSON file: {err}") from None
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"--chat_file {path} must hold a non-empty JSON list of "
                          '{"role": ..., "content": ...} messages')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ConfigError(f"--chat_file {path}: message {i} must be an object with string 'role' and "
                              f"'content', got {json.dumps(m, ensure_ascii=False)[:80]}")
    return messages
