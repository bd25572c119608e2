"""`--run_mode predict` with the generation flags: a prompt file in batches, sampling, packed kernels,
tokens/s on stderr; bad flag values stop before MindSpore is imported."""
import json
import os

import mindspore as ms
import pytest

from bitcpm_ms.app.artifacts import build_model
from bitcpm_ms.app.config import load_config

from ..helpers import SMALL_MODEL, TINY_YAML, run_cli


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top_p", "0"], "--top_p must be in (0, 1]"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1, got 0"),
    (["--packed", "maybe"], "expected true or false"),
    (["--prompt_file", "/nonexistent/prompts.txt"], "does not exist"),
    (["--decode_steps", "0"], "--decode_steps must be >= 1, got 0"),
    (["--decode_steps", "4"], "--decode_steps > 1 needs --packed true"),
    (["--head_dtype", "int4"], "invalid choice: 'int4'"),
    (["--kv_dtype", "int8"], "invalid choice: 'int8'"),
    (["--kv_dtype", "float16", "--decode_graphs", "."], "--kv_dtype applies to in-process decoding"),
    (["--chat", ""], "--chat is empty"),
    (["--chat", "hi", "--chat_file", "c.json"], "--chat and --chat_file are exclusive"),
    (["--chat", "hi", "--prompt_file", os.path.abspath(__file__)], "--chat cannot be combined with --prompt_file"),
    (["--chat_file", "/nonexistent/chat.json"], "--chat_file /nonexistent/chat.json does not exist"),
    (["--chat_file", os.path.abspath(__file__)], "is not a JSON file"),
])
def test_bad_predict_flags_are_named_errors(flags, message):
    res = run_cli(["--config", TINY_YAML, "--run_mode", "predict", *flags], timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]


def test_prompt_file_sampling_packed(small_dataset, tmp_path):
    ds, _, _, _ = small_dataset
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    ms.save_checkpoint(build_model(load_config(TINY_YAML, ov)), str(tmp_path / "model.ckpt"))
    (tmp_path / "prompts.txt").write_text("The horse\n\nA word\nOf the\n", encoding="utf-8")
    args = ["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
            "--load_checkpoint", str(tmp_path / "model.ckpt"), "--processor.tokenizer.vocab_file",
            str(ds / "tokenizer.model"), *SMALL_MODEL, "--prompt_file", str(tmp_path / "prompts.txt"),
            "--predict_batch_size", "3", "--max_new_tokens", "6", "--temperature", "0.7", "--top_p", "0.7",
            "--seed", "3", "--packed", "true", "--kv_dtype", "float16"]
    res = run_cli(args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("[")]
    assert [line[:4] for line in lines] == ["[0] ", "[1] ", "[2] "]
    assert lines[0].startswith("[0] The horse") and lines[2].startswith("[2] Of the")
    stats = [line for line in res.stderr.splitlines() if line.startswith("prefill:")]
    assert stats and "tok/s" in stats[0] and "packed" in stats[0] and "seed 3" in stats[0]
    assert os.path.isdir(tmp_path / "out")


@pytest.mark.slow
def test_export_decode_graphs_then_predict_from_them(small_dataset, tmp_path):
    """export_packed(decode_graphs=...) (bitcpm-export --decode_graphs) writes the MindIR decoding graphs;
    predict --decode_graphs uses them and prints the same greedy text as the in-process packed model."""
    from bitcpm_ms.app.export import export_packed
    ds, _, _, _ = small_dataset
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    ms.save_checkpoint(build_model(load_config(TINY_YAML, ov)), str(tmp_path / "model.ckpt"))
    s = export_packed(load_config(TINY_YAML, ov), str(tmp_path / "model.ckpt"), str(tmp_path / "export"),
                      mindir=False, decode_graphs=(16, None))
    assert s["decode_graphs"]["prompt_length"] == 16 and s["decode_graphs"]["cache_length"] == 64
    assert sorted(os.listdir(tmp_path / "export" / "decode")) == ["decode_graphs.json", "decode_step.mindir",
                                                                  "prefill.mindir"]
    common = ["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
              "--load_checkpoint", str(tmp_path / "model.ckpt"), "--processor.tokenizer.vocab_file",
              str(ds / "tokenizer.model"), *SMALL_MODEL, "--prompt", "The horse", "--max_new_tokens", "8"]
    packed = run_cli(common + ["--packed", "true"])
    graphs = run_cli(common + ["--decode_graphs", str(tmp_path / "export" / "decode")])
    assert packed.returncode == 0 and graphs.returncode == 0, packed.stderr[-2000:] + graphs.stderr[-2000:]
    assert graphs.stdout.strip().splitlines()[-1] == packed.stdout.strip().splitlines()[-1]
    assert "MindIR" in graphs.stderr


def test_chat_sampling_defaults_and_eos_lists():
    """--chat / --chat_file default to MiniCPM4's temperature 0.7 / top_p 0.7 unless given; plain prompts stay
    greedy; a GenerationConfig takes one eos id or a list."""
    from bitcpm_ms.app.cli import parse_train_args
    from bitcpm_ms.inference.sampling import GenerationConfig, GenerationError
    base = ["--config", TINY_YAML, "--run_mode", "predict"]
    args, _ = parse_train_args(base + ["--chat", "Hi"])
    assert (args.temperature, args.top_p) == (0.7, 0.7)
    args, _ = parse_train_args(base + ["--chat", "Hi", "--temperature", "0", "--top_p", "0.9"])
    assert (args.temperature, args.top_p) == (0.0, 0.9)
    args, _ = parse_train_args(base + ["--prompt", "A horse"])
    assert (args.temperature, args.top_p) == (0.0, 1.0)
    assert GenerationConfig(eos_token_id=[73440, 2]).eos_token_ids == (73440, 2)
    assert GenerationConfig(eos_token_id=2).eos_token_ids == (2,) and GenerationConfig().eos_token_ids == ()
    with pytest.raises(GenerationError, match="eos_token_id must be"):
        GenerationConfig(eos_token_id=["2"])


def _chat_checkpoint(path, chain):
    """A SMALL_MODEL checkpoint whose next token is a function of the current one: the embedding row of
    `prev` has a large value in dimension k and the head row of `next` too, for consecutive (prev, next)
    of `chain`; those values dwarf the layers' contributions (RMS-normed inputs, small weights), so the
    model (fake-quant or packed, sampled at 0.7 or greedy) continues the prompt's last token with
    chain[1], chain[2], ...; the chain loops back after its last token."""
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    net = build_model(load_config(TINY_YAML, ov))
    params = {p.name: p for p in net.get_parameters()}
    emb = params["model.tok_embeddings.embedding_weight"].asnumpy()
    head = params["lm_head.weight"].asnumpy()
    steps = list(zip(chain, chain[1:] + chain[1:2]))
    emb[:, :len(steps)] = 0.0
    head[:, :len(steps)] = 0.0
    for k, (prev, nxt) in enumerate(steps):
        emb[prev, k] = head[nxt, k] = 30.0
    params["model.tok_embeddings.embedding_weight"].set_data(ms.Tensor(emb))
    params["lm_head.weight"].set_data(ms.Tensor(head))
    ms.save_checkpoint(net, str(path))


def test_chat_prints_only_the_reply_and_stops_at_im_end(tmp_path):
    """--chat and --chat_file with a MiniCPM4-shaped tokenizer directory (8 added chat tokens, ChatML
    template, eos <|im_end|> + generation_config [2, <|im_end|>]): the prompt is the rendered template
    with BOS, the reply is printed alone (no prompt, no special tokens) and ends at <|im_end|>: the
    model would go on with the same words after it (its chain loops), so a longer reply means the stop
    failed. Default chat sampling (0.7 / 0.7) on the fake-quant model, and greedy on the packed model
    (16 tokens per graph call: the <|im_end|> falls inside the first call)."""
    from bitcpm_ms.data.hf_tokenizer import HFTokenizer
    from ..data.test_hf_tokenizer import IM_END, make_hf_tokenizer_dir
    tok_dir = make_hf_tokenizer_dir(tmp_path / "tokenizer")
    tok = HFTokenizer(tok_dir)
    reply_ids = tok.encode(" the water", add_special_tokens=False)
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Which horse?"}]))
    assert prompt[0] == 1 and len(reply_ids) >= 2 and IM_END not in reply_ids
    _chat_checkpoint(tmp_path / "model.ckpt", [prompt[-1], *reply_ids, IM_END])
    (tmp_path / "chat.json").write_text(json.dumps([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Then?"}]), encoding="utf-8")              # 45 tokens: fits the context of 64
    common = ["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
              "--load_checkpoint", str(tmp_path / "model.ckpt"), "--processor.tokenizer.vocab_file", tok_dir,
              *SMALL_MODEL, "--max_new_tokens", "12"]
    for flags in (["--chat", "Which horse?", "--seed", "1"],
                  ["--chat_file", str(tmp_path / "chat.json"), "--packed", "true", "--temperature", "0"]):
        res = run_cli(common + flags)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        assert res.stdout.splitlines()[-1] == " the water", res.stdout[-2000:]
        assert not any(w in res.stdout for w in ("horse", "Then?", "<|im", "assistant", "<s>"))
        stats = [line for line in res.stderr.splitlines() if line.startswith("prefill:")]
        assert stats and stats[0].endswith("| eos"), stats
        assert f"decode: {len(reply_ids)} tokens" in stats[0]         # the reply and <|im_end|>, nothing after


def test_chat_needs_a_chat_template(small_dataset, tmp_path):
    ds = small_dataset[0]
    res = run_cli(["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
                   "--processor.tokenizer.vocab_file", str(ds / "tokenizer.model"), *SMALL_MODEL, "--chat", "Hi"],
                  timeout=300)
    assert res.returncode == 2 and "--chat needs a tokenizer with a chat template" in res.stderr, res.stderr[-2000:]
