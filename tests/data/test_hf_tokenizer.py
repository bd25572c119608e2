"""HFTokenizer (bitcpm_ms/data/hf_tokenizer.py): a Hugging Face SentencePiece tokenizer directory as
transformers' slow LlamaTokenizer (4.46, legacy=True) reads it, on a tiny directory built like
MiniCPM4's (SentencePiece BPE without dummy prefix, 8 added chat tokens after the pieces, ChatML
template, eos <|im_end|> plus generation_config's [2, <|im_end|>]).

The expected values of the tiny directory were checked against transformers 4.46.3 (the slow test
at the end re-runs that check where a transformers venv exists); the real MiniCPM4 tokenizer is
checked against the reference ids of /work/refs/tokenize_ref.json when present."""
import io
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import sentencepiece as spm

from bitcpm_ms.data.errors import DataError
from bitcpm_ms.data.hf_tokenizer import HFTokenizer, load_tokenizer
from bitcpm_ms.data.hf_tokenizer_files import write_tokenizer_files
from bitcpm_ms.data.tokenizer import SPTokenizer, train_tokenizer

from .corpora import english_doc

# facts of the real MiniCPM4 tokenizer_config.json / added_tokens.json
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
ADDED = ["<|im_end|>", "<|im_start|>", "<|tool_call|>", "<|execute_start|>", "<|execute_end|>", "<|fim_prefix|>",
         "<|fim_middle|>", "<|fim_suffix|>"]
PIECES = 400                       # the tiny model's pieces; the added tokens are 400..407
IM_END, IM_START = PIECES, PIECES + 1
NEWLINE = 3                        # "\n" is a user-defined piece (as in MiniCPM4, where it is id 5)
REFS = "/work/refs"
REFENV_PYTHON = "/work/refenv/bin/python"


def train_tiny_sp(model_path: str) -> str:
    """A 400-piece SentencePiece BPE model with MiniCPM4's settings: unk 0, bos 1, eos 2, no pad, no dummy
    prefix, identity normalizer, byte fallback, user-defined "\\n", "..." and "<img>" (ids 3, 4, 5)."""
    rng = random.Random(3)
    lines = [english_doc(rng) for _ in range(400)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=PIECES, byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        user_defined_symbols=["\n", "...", "<img>"], num_threads=1, minloglevel=2)
    with open(model_path, "wb") as f:
        f.write(buf.getvalue())
    return model_path


def _entry(content):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def make_hf_tokenizer_dir(path, model_file=None, config=True, template=CHATML, generation_eos=(2, IM_END),
                          **config_overrides) -> str:
    """A MiniCPM4-shaped tokenizer directory at `path` (tokenizer.model trained here unless given)."""
    os.makedirs(path, exist_ok=True)
    if model_file:
        shutil.copyfile(model_file, os.path.join(path, "tokenizer.model"))
    else:
        train_tiny_sp(os.path.join(path, "tokenizer.model"))
    files = {"added_tokens.json": {t: PIECES + i for i, t in enumerate(ADDED)},
             "special_tokens_map.json": {"additional_special_tokens": ADDED,
                                         **{k: {key: v for key, v in _entry(t).items() if key != "special"}
                                            for k, t in (("bos_token", "<s>"), ("eos_token", "<|im_end|>"),
                                                         ("unk_token", "<unk>"))}},
             "generation_config.json": {"bos_token_id": 1, "eos_token_id": list(generation_eos), "pad_token_id": 2}}
    if config:
        cfg = {"add_bos_token": True, "add_eos_token": False, "add_prefix_space": None,
               "added_tokens_decoder": {str(i): _entry(t) for i, t in
                                        [(0, "<unk>"), (1, "<s>"), (2, "</s>")] +
                                        [(PIECES + i, t) for i, t in enumerate(ADDED)]},
               "additional_special_tokens": ADDED, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
               "eos_token": "<|im_end|>", "legacy": True, "pad_token": None, "sp_model_kwargs": {},
               "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
               "use_default_system_prompt": False}
        if template is not None:
            cfg["chat_template"] = template
        cfg.update(config_overrides)
        files["tokenizer_config.json"] = cfg
    for name, obj in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return train_tiny_sp(str(tmp_path_factory.mktemp("sp") / "tokenizer.model"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_model):
    return make_hf_tokenizer_dir(tmp_path_factory.mktemp("hf") / "tok", tiny_model)


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    """A tokenizer as run/prepare_data.py trains ours (pad 0, bos 1, eos 2, unk 3), alone in its folder."""
    rng = random.Random(4)
    path = str(tmp_path_factory.mktemp("own") / "tokenizer.model")
    return train_tokenizer([english_doc(rng) for _ in range(300)], path, vocab_size=400)


def sp_ids(model_file, text):
    return spm.SentencePieceProcessor(model_file=model_file).encode(text)


# ---------------------------------------------------------------------------- encoding
def test_chat_tokens_are_single_ids_and_bos_is_prepended(tiny_dir, tiny_model):
    tok = HFTokenizer(tiny_dir)
    assert (tok.vocab_size, tok.bos_id, tok.add_bos, tok.eos_token_ids) == (408, 1, True, (IM_END, 2))
    text = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode(text) == [1, IM_START, *sp_ids(tiny_model, "user"), NEWLINE, *sp_ids(tiny_model, "Hi there"),
                                IM_END, NEWLINE, IM_START, *sp_ids(tiny_model, "assistant"), NEWLINE]
    assert tok.encode(text, add_special_tokens=False)[:2] == [IM_START, sp_ids(tiny_model, "user")[0]]
    assert [tok.encode(t, add_special_tokens=False) for t in ADDED] == [[PIECES + i] for i in range(8)]
    assert tok.encode("", add_special_tokens=True) == [1]


def test_text_after_a_special_token_is_encoded_as_it_is(tiny_dir, tiny_model):
    """legacy=True, no dummy prefix: nothing is added or stripped around a special token."""
    tok = HFTokenizer(tiny_dir)
    sp = spm.SentencePieceProcessor(model_file=tiny_model)
    after = tok.encode("<|im_end|> the horse", add_special_tokens=False)
    assert after == [IM_END, *sp.encode(" the horse")] and sp.id_to_piece(after[1]).startswith("\u2581")
    assert tok.encode("<|im_end|>the", add_special_tokens=False) == [IM_END, *sp.encode("the")]
    assert not sp.id_to_piece(sp.encode("the")[0]).startswith("\u2581")
    # a piece of a special token is text; specials inside other text are found anywhere, back to back
    assert tok.encode("<|im_end", add_special_tokens=False) == sp.encode("<|im_end")
    assert tok.encode("a<|im_end|><|im_start|>b", add_special_tokens=False) == \
        [*sp.encode("a"), IM_END, IM_START, *sp.encode("b")]
    # <s> and </s> are in added_tokens_decoder: ids, not text; <unk> too
    assert tok.encode("x</s><s><unk>", add_special_tokens=False) == [*sp.encode("x"), 2, 1, 0]


def test_legacy_directory_without_tokenizer_config(tmp_path, tiny_model):
    """No tokenizer_config.json (MiniCPM4-0.5B): added_tokens.json + special_tokens_map.json; "</s>" is then
    not a special token (the eos is <|im_end|>), so it stays text; the first piece's "▁" is dropped on decode
    (LlamaTokenizer's add_prefix_space default)."""
    tok = HFTokenizer(make_hf_tokenizer_dir(tmp_path / "t", tiny_model, config=False))
    sp = spm.SentencePieceProcessor(model_file=tiny_model)
    assert tok.chat_template is None and tok.eos_token_ids == (IM_END, 2) and tok.add_bos
    assert tok.encode("x</s><s>", add_special_tokens=False) == [*sp.encode("x</s>"), 1]
    assert tok.encode("<|im_start|>a") == [1, IM_START, *sp.encode("a")]
    ids = tok.encode(" the horse", add_special_tokens=False)
    assert tok.decode(ids) == "the horse"
    with pytest.raises(DataError, match="has no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_split_special_tokens_and_no_bos(tmp_path, tiny_model):
    tok = HFTokenizer(make_hf_tokenizer_dir(tmp_path / "t", tiny_model, split_special_tokens=True,
                                            add_bos_token=False))
    assert tok.encode("<|im_end|>a") == sp_ids(tiny_model, "<|im_end|>a")


def test_added_token_strip_flags(tmp_path, tiny_model):
    """lstrip / rstrip of an added token eat the whitespace next to it (transformers' rule)."""
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model)
    cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
    cfg["added_tokens_decoder"][str(IM_END)].update(lstrip=True, rstrip=True)
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    tok = HFTokenizer(d)
    assert tok.encode("a  <|im_end|>  b", add_special_tokens=False) == \
        [*sp_ids(tiny_model, "a"), IM_END, *sp_ids(tiny_model, "b")]


# ---------------------------------------------------------------------------- decoding
def test_decode_as_llama_tokenizer(tiny_dir, tiny_model):
    tok = HFTokenizer(tiny_dir)
    ids = tok.encode("<|im_start|>user\nHi there<|im_end|>\n")
    assert tok.decode(ids) == "<s> <|im_start|> user\nHi there <|im_end|> \n"
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHi there\n"
    assert tok.decode(tok.encode(" the horse... <img>", add_special_tokens=False)) == " the horse... <img>"
    # </s> is an added token but not a special attribute here: kept, with spaces, even when skipping
    assert tok.decode([*sp_ids(tiny_model, "a"), 2, *sp_ids(tiny_model, "b")], skip_special_tokens=True) == "a </s> b"
    assert tok.decode([*sp_ids(tiny_model, "a"), 1, *sp_ids(tiny_model, "b")]) == " a<s>b"
    assert tok.decode([*sp_ids(tiny_model, "ok"), IM_END, 450, 511], skip_special_tokens=True) == "ok"


# ---------------------------------------------------------------------------- chat template
def test_chat_template_renders_chatml(tiny_dir):
    tok = HFTokenizer(tiny_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "A horse?"}]
    assert tok.apply_chat_template(msgs) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                             "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nA horse?"
                                             "<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(msgs[1:2], add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_chat_template_environment(tmp_path, tiny_model):
    """trim_blocks / lstrip_blocks, bos_token / eos_token variables, raise_exception, tojson without HTML
    escaping, loop controls, {% generation %} blocks, and a template list with a default."""
    template = ("{{ bos_token }}{% for m in messages %}\n  {% if m['role'] == 'tool' %}"
                "{{ raise_exception('no tools') }}{% endif %}\n  {% if loop.index > 2 %}{% break %}{% endif %}\n"
                "{% generation %}{{ m['content'] | tojson }}{% endgeneration %}{{ eos_token }}\n{% endfor %}")
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model, template=[{"name": "default", "template": template},
                                                                    {"name": "tool_use", "template": "x"}])
    tok = HFTokenizer(d)
    msgs = [{"role": "user", "content": "a<b> & 中"}, {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"}]
    assert tok.apply_chat_template(msgs) == '<s>"a<b> & 中"<|im_end|>\n"c"<|im_end|>\n'     # as transformers 4.46.3
    with pytest.raises(DataError, match="no tools"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(DataError, match="not valid Jinja"):
        HFTokenizer(make_hf_tokenizer_dir(tmp_path / "u", tiny_model, template="{% for %}")).apply_chat_template([])
    with pytest.raises(DataError, match="none named 'default'"):
        HFTokenizer(make_hf_tokenizer_dir(tmp_path / "v", tiny_model, template=[{"name": "a", "template": "x"}]))


def test_sandbox_refuses_unsafe_templates(tmp_path, tiny_model):
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model, template="{{ messages.append(1) }}")
    with pytest.raises(DataError, match="chat template"):
        HFTokenizer(d).apply_chat_template([{"role": "user", "content": "x"}])


# ---------------------------------------------------------------------------- eos ids and errors
def test_eos_ids_union_of_config_files(tmp_path, tiny_model):
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model, generation_eos=(IM_END,))
    json.dump({"eos_token_id": 2, "vocab_size": 408}, open(os.path.join(d, "config.json"), "w"))
    assert HFTokenizer(d).eos_token_ids == (IM_END, 2)
    os.remove(os.path.join(d, "config.json"))
    assert HFTokenizer(d).eos_token_ids == (IM_END,)


@pytest.mark.parametrize("damage, message", [
    ("no_model", "has no tokenizer.model"),
    ("bad_json", r"tokenizer_config.json is not valid JSON"),
    ("not_object", r"added_tokens.json must hold a JSON object"),
    ("collision", r"added token '<\|im_end\|>' has id 7, which is the SentencePiece piece '<0x01>'"),
    ("legacy_false", "legacy: false is not supported"),
    ("decoder_without_content", r"added_tokens_decoder\['0'\] needs an id >= 0 as key and a 'content' string"),
])
def test_bad_directories_are_named_data_errors(tmp_path, tiny_model, damage, message):
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model)
    cfg_path = os.path.join(d, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    if damage == "no_model":
        os.remove(os.path.join(d, "tokenizer.model"))
    elif damage == "bad_json":
        open(cfg_path, "w").write('{"add_bos_token": tru')
    elif damage == "not_object":
        json.dump([1, 2], open(os.path.join(d, "added_tokens.json"), "w"))
    elif damage == "collision":
        cfg["added_tokens_decoder"]["7"] = cfg["added_tokens_decoder"].pop(str(IM_END))
        json.dump(cfg, open(cfg_path, "w"))
    elif damage == "legacy_false":
        cfg["legacy"] = False
        json.dump(cfg, open(cfg_path, "w"))
    elif damage == "decoder_without_content":
        cfg["added_tokens_decoder"]["0"] = {"special": True}
        json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(DataError, match=message):
        HFTokenizer(d)


def test_legacy_added_tokens_json_collision(tmp_path, tiny_model):
    d = make_hf_tokenizer_dir(tmp_path / "t", tiny_model, config=False)
    json.dump({"<|im_end|>": 9, "<|im_start|>": PIECES}, open(os.path.join(d, "added_tokens.json"), "w"))
    with pytest.raises(DataError, match=r"added token '<\|im_end\|>' has id 9, which is the SentencePiece piece"):
        HFTokenizer(d)


# ---------------------------------------------------------------------------- load_tokenizer and writing
def test_load_tokenizer_picks_the_kind(tmp_path, tiny_dir, own_model):
    plain = load_tokenizer(own_model)                             # our own: a model file without HF files
    assert isinstance(plain, SPTokenizer)
    assert (plain.eos_token_ids, plain.add_bos, plain.bos_id, plain.chat_template) == ((2,), False, 1, None)
    assert plain.encode("The horse") == plain.sp.encode("The horse")
    assert isinstance(load_tokenizer(tiny_dir), HFTokenizer)
    assert isinstance(load_tokenizer(os.path.join(tiny_dir, "tokenizer.model")), HFTokenizer)
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nothing"))


def test_write_tokenizer_files_round_trip(tmp_path, tiny_dir):
    src = HFTokenizer(tiny_dir)
    names = write_tokenizer_files(src, str(tmp_path / "out"))
    assert sorted(names) == ["added_tokens.json", "special_tokens_map.json", "tokenizer.model",
                             "tokenizer_config.json"]
    back = HFTokenizer(str(tmp_path / "out"))
    text = "<|im_start|>user\nHi</s> there<|im_end|>\n<|fim_prefix|>x"
    assert back.encode(text) == src.encode(text) and back.decode(src.encode(text)) == src.decode(src.encode(text))
    assert (back.chat_template, back.eos_token_ids[0], back.vocab_size, back.add_bos) == (CHATML, IM_END, 408, True)
    assert json.load(open(tmp_path / "out" / "added_tokens.json")) == {t: PIECES + i for i, t in enumerate(ADDED)}
    cfg = json.load(open(tmp_path / "out" / "tokenizer_config.json"))
    assert cfg["added_tokens_decoder"][str(IM_END)]["content"] == "<|im_end|>" and cfg["eos_token"] == "<|im_end|>"


def test_write_tokenizer_files_keeps_a_legacy_directory_s_behaviour(tmp_path, tiny_model):
    src = HFTokenizer(make_hf_tokenizer_dir(tmp_path / "t", tiny_model, config=False))
    write_tokenizer_files(src, str(tmp_path / "out"))
    back = HFTokenizer(str(tmp_path / "out"))
    text = " the horse</s><s><|im_end|>"
    assert back.encode(text) == src.encode(text) and back.encode(text)[-2:] == [1, IM_END]
    ids = back.encode(" the horse", add_special_tokens=False)
    assert back.decode(ids) == src.decode(ids) == "the horse"         # add_prefix_space (True) kept


def test_write_tokenizer_files_of_our_own_tokenizer(tmp_path, own_model):
    """Our SentencePiece model as an HF directory: no BOS, "</s>" in text stays text."""
    sp_tok = SPTokenizer(own_model)
    write_tokenizer_files(sp_tok, str(tmp_path / "out"))
    back = HFTokenizer(str(tmp_path / "out"))
    text = "The horse</s> and <s> x"
    assert back.encode(text) == sp_tok.encode(text) and back.add_bos is False
    assert back.eos_token_ids == (2,) and back.chat_template is None
    assert not os.path.exists(tmp_path / "out" / "added_tokens.json")


# ---------------------------------------------------------------------------- the real tokenizer
@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(REFS, "tokenize_ref.json")), reason="no reference ids")
def test_real_minicpm4_tokenizer_matches_transformers_ids():
    """/work/refs/tokenize_ref.json: ids, ids without specials, decoded text and the chat of transformers
    4.46.3's LlamaTokenizer on the MiniCPM4-8B directory."""
    ref = json.load(open(os.path.join(REFS, "tokenize_ref.json")))
    tok = HFTokenizer(ref["tok_dir"])
    assert (tok.vocab_size, tok.bos_id, tok.eos_token_ids[0]) == (ref["vocab_size"], ref["bos_token_id"],
                                                                 ref["eos_token_id"])
    assert tok.eos_token_ids == (73440, 2)
    for item in ref["items"]:
        if "text" in item:
            assert tok.encode(item["text"]) == item["ids"], item["text"]
            assert tok.encode(item["text"], add_special_tokens=False) == item["ids_no_special"]
            assert tok.decode(item["ids"]) == item["decoded"]
        else:
            text = tok.apply_chat_template(item["chat"])
            assert text == item["chat_text"]
            assert tok.encode(text, add_special_tokens=False) == item["chat_ids"]
            assert tok.decode(item["chat_ids"]) == item["chat_decoded"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(REFS, "minicpm4_8b", "tokenizer.model")), reason="no MiniCPM4")
def test_real_minicpm4_facts():
    """Values read off transformers 4.46.3 (LlamaTokenizer) on the MiniCPM4-8B and -0.5B directories."""
    tok = HFTokenizer(os.path.join(REFS, "minicpm4_8b"))
    chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode(chat) == [1, 73441, 1836, 5, 24252, 73440, 5, 73441, 43686, 5]
    assert tok.encode("<s>a</s>b<unk>c") == [1, 1, 59324, 2, 59340, 0, 59333]
    assert tok.decode([1, 1, 59324, 2, 59340, 0, 59333]) == "<s><s>a </s>  b<unk>c"
    assert tok.encode("x<|im_end|>  y") == [1, 59356, 73440, 1345, 59339]
    small = HFTokenizer(os.path.join(REFS, "minicpm4_05b"))
    assert small.encode("<s>a</s>b<unk>c") == [1, 1, 59324, 1731, 59328, 59388, 59340, 0, 59333]
    assert small.decode(small.encode(" hello<|im_end|> world"), skip_special_tokens=True) == "hello world"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REFENV_PYTHON), reason="no transformers venv")
def test_tiny_directories_match_transformers(tmp_path, tiny_model):
    """Differential check: transformers' LlamaTokenizer (a separate venv) and HFTokenizer on the tiny
    directories (with config, without, split_special_tokens) over random texts of chat tokens, spaces,
    newlines, user-defined pieces and non-ASCII."""
    dirs = [make_hf_tokenizer_dir(tmp_path / "a", tiny_model),
            make_hf_tokenizer_dir(tmp_path / "b", tiny_model, config=False),
            make_hf_tokenizer_dir(tmp_path / "c", tiny_model, split_special_tokens=True, add_bos_token=False)]
    rng = random.Random(5)
    atoms = ["<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<|tool_call|>", " ", "  ", "\n", "\t", "\u2581",
             "a", "horse", " the", "中", "...", ".", "<img>", "12", "é", "<", "|", ">"]
    texts = ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 8))) for _ in range(200)]
    json.dump({"dirs": dirs, "texts": texts}, open(tmp_path / "in.json", "w"))
    script = ("import json,sys\nfrom transformers import LlamaTokenizer\nd=json.load(open(sys.argv[1]))\nout=[]\n"
              "for p in d['dirs']:\n t=LlamaTokenizer.from_pretrained(p)\n e=[t.encode(x) for x in d['texts']]\n"
              " out.append({'enc':e,'dec':[t.decode(i) for i in e],'skip':[t.decode(i,skip_special_tokens=True) "
              "for i in e]})\njson.dump(out,open(sys.argv[2],'w'))\n")
    proc = subprocess.run([REFENV_PYTHON, "-c", script, str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=300, env={"PATH": os.environ.get("PATH", "")})
    if proc.returncode != 0:
        pytest.skip(f"transformers venv did not run: {proc.stderr[-300:]}")
    ref = json.load(open(tmp_path / "out.json"))
    for d, r in zip(dirs, ref):
        tok = HFTokenizer(d)
        assert [tok.encode(t) for t in texts] == r["enc"], d
        assert [tok.decode(i) for i in r["enc"]] == r["dec"], d
        assert [tok.decode(i, skip_special_tokens=True) for i in r["enc"]] == r["skip"], d
    assert sys.executable != REFENV_PYTHON
