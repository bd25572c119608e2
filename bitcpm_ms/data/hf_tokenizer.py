"""Hugging Face SentencePiece tokenizer directories (MiniCPM4 / BitCPM-CANN), without transformers.

A MiniCPM4 tokenizer is a directory: ``tokenizer.model`` (SentencePiece BPE, 73,440 pieces, no dummy
prefix), ``added_tokens.json`` (``<|im_end|>`` 73440 ... ``<|fim_suffix|>`` 73447),
``tokenizer_config.json`` (``LlamaTokenizer``, ``legacy: true``, ``add_bos_token: true``,
``eos_token: <|im_end|>``, ``added_tokens_decoder``, a ChatML ``chat_template``),
``special_tokens_map.json`` and ``generation_config.json`` (``eos_token_id: [2, 73440]``).
``HFTokenizer`` reproduces what transformers' slow ``LlamaTokenizer`` (4.46, ``legacy=True``) does with
such a directory, checked id for id and string for string against it (tests/data/test_hf_tokenizer.py):

* **Added / special tokens are whole strings.** The text is split on every added token (those of
  ``added_tokens_decoder``, else of ``added_tokens.json``, plus bos/eos/unk/pad and
  ``additional_special_tokens``; leftmost, longest first), each becomes its one id, and the pieces
  between are encoded by SentencePiece **separately and as they are**: with ``legacy=True`` nothing is
  added or stripped after a special token, so ``"<|im_start|>user"`` is ``[73441] + sp("user")`` and,
  the model having no dummy prefix, ``"<|im_end|> x"`` keeps its space as ``"▁x"``. ``"<s>"`` and
  ``"</s>"`` in text are ids 1 and 2 when the config lists them (MiniCPM4-8B does; a directory without
  ``tokenizer_config.json`` only has ``<s>``, ``<unk>`` and its additional tokens, so ``"</s>"`` stays
  text). ``split_special_tokens: true`` (our own exported tokenizers) turns the splitting off.
* ``encode(text)`` prepends BOS when ``add_bos_token`` (default true, as LlamaTokenizer), appends EOS
  when ``add_eos_token``.
* ``decode`` follows LlamaTokenizer's quirks, because a reply must read as HF prints it: tokens that
  are added but not special-attribute tokens (the MiniCPM4 chat tokens, ``</s>`` in 8B) are joined
  to the SentencePiece text with spaces (``spaces_between_special_tokens`` is effectively always on in
  4.46), a bos/eos/unk inside the text gets a space before it, ``skip_special_tokens`` drops the ids of
  bos/eos/unk/pad/additional tokens; with ``add_prefix_space`` (true when the directory has no
  ``tokenizer_config.json``) the first piece's leading ``▁`` is dropped. Ids past the tokenizer (a
  model's padding rows) decode to nothing instead of raising.
* ``eos_token_ids``: the tokenizer's eos token, then every ``eos_token_id`` (int or list) of
  ``generation_config.json`` and ``config.json``: MiniCPM4 stops at ``<|im_end|>`` and ``</s>``.
* ``apply_chat_template(messages, add_generation_prompt=True)`` renders the template the way
  transformers does: jinja2 ``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with
  ``loopcontrols``, ``raise_exception``, ``strftime_now``, a non-escaping ``tojson`` and ``{% generation
  %}`` blocks, and the special tokens (``bos_token``, ``eos_token``, ...) as variables. Note that
  transformers' ``apply_chat_template(tokenize=True)`` then encodes *without* BOS, while vLLM and
  llama.cpp encode the rendered text with the tokenizer's BOS; ``bitcpm-train --chat`` does the latter.

Bad directories are ``DataError``s naming the file: no ``tokenizer.model``, unreadable or invalid JSON,
an added token whose id is already a different SentencePiece piece, ``legacy: false`` (whose
prefix-space rules this class does not implement), or a chat asked of a tokenizer without template.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import DataError
from .chat_template import compile_chat_template
from .tokenizer import SPTokenizer, load_sentencepiece

SPIECE_UNDERLINE = "\u2581"
MODEL_FILE = "tokenizer.model"
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "pad_token")
LLAMA_DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}
HF_MARKERS = ("tokenizer_config.json", "added_tokens.json")


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False


def read_json(path: str, what: str = None):
    """The parsed JSON file at `path`, None when it does not exist; a DataError names a bad one."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what or 'tokenizer file'} {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err})") from None


def _content(value) -> Optional[str]:
    """A special token as tokenizer_config / special_tokens_map write it: a string or {content: ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _added(value, special: bool) -> AddedToken:
    if isinstance(value, dict):
        return AddedToken(value["content"], bool(value.get("special", special)), bool(value.get("lstrip")),
                          bool(value.get("rstrip")), bool(value.get("single_word")))
    return AddedToken(str(value), special)


def _ids(value) -> List[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class HFTokenizer:
    """A Hugging Face (LlamaTokenizer, legacy) SentencePiece tokenizer directory; see the module doc."""

    def __init__(self, path: str):
        self.dir = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
        self.model_file = os.path.join(self.dir, MODEL_FILE)
        if not os.path.isfile(self.model_file):
            raise DataError(f"tokenizer directory {self.dir} has no {MODEL_FILE} (a Hugging Face SentencePiece "
                            "tokenizer needs it)")
        self.sp = load_sentencepiece(self.model_file, strict_special_ids=False)
        self.sp_size = self.sp.get_piece_size()
        files = {name: read_json(os.path.join(self.dir, name)) for name in
                 ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "generation_config.json", "config.json")}
        for name, obj in files.items():
            if obj is not None and not isinstance(obj, dict):
                raise DataError(f"{os.path.join(self.dir, name)} must hold a JSON object, got {type(obj).__name__}")
        self._configure(files)

    # ------------------------------------------------------------------ loading (transformers' rules)
    def _configure(self, files):
        cfg = files["tokenizer_config.json"]
        init = dict(cfg or {})
        decoder: Dict[int, AddedToken] = {}
        if "added_tokens_decoder" in init:                      # the current format: the config says it all
            for idx, tok in (init["added_tokens_decoder"] or {}).items():
                if not isinstance(tok, dict) or not isinstance(tok.get("content"), str) or not str(idx).isdigit():
                    raise DataError(f"{self._path('tokenizer_config.json')}: added_tokens_decoder[{idx!r}] needs "
                                    "an id >= 0 as key and a 'content' string")
                decoder[int(idx)] = _added(tok, special=False)
        else:                                                   # legacy: special_tokens_map + added_tokens.json
            for key, value in (files["special_tokens_map.json"] or {}).items():
                if key == "additional_special_tokens" and isinstance(value, list):
                    extra = list(init.get("additional_special_tokens") or [])
                    extra += [v for v in value if _content(v) not in {_content(e) for e in extra}]
                    init[key] = extra
                else:
                    init[key] = value
            special = {_content(init.get(k)) for k in SPECIAL_ATTRS} | \
                      {_content(v) for v in init.get("additional_special_tokens") or []}
            for text, idx in (files["added_tokens.json"] or {}).items():
                if not isinstance(idx, int):
                    raise DataError(f"{self._path('added_tokens.json')}: the id of {text!r} is {idx!r}, not an int")
                if idx in decoder:
                    raise DataError(f"{self._path('added_tokens.json')}: id {idx} is given to both "
                                    f"{decoder[idx].content!r} and {text!r}")
                decoder[idx] = AddedToken(text, special=text in special)
        if init.get("legacy") is False:
            raise DataError(f"{self._path('tokenizer_config.json')}: legacy: false is not supported (its prefix-space "
                            "rules differ from legacy LlamaTokenizer's); use legacy: true")
        self.special: Dict[str, Optional[str]] = {}
        for key in SPECIAL_ATTRS:
            self.special[key] = _content(init[key]) if key in init else LLAMA_DEFAULTS[key]
        self.additional_special_tokens = [_content(v) for v in init.get("additional_special_tokens") or []
                                          if _content(v)]
        raw = {_content(v): v for v in [*(init.get(k) for k in SPECIAL_ATTRS),
                                        *(init.get("additional_special_tokens") or [])] if _content(v)}
        for idx, tok in decoder.items():
            if idx < 0:
                raise DataError(f"{self.dir}: added token {tok.content!r} has a negative id {idx}")
            if idx < self.sp_size and self.sp.id_to_piece(idx) != tok.content:
                raise DataError(f"{self.dir}: added token {tok.content!r} has id {idx}, which is the SentencePiece "
                                f"piece {self.sp.id_to_piece(idx)!r} of {MODEL_FILE}")
        self.added_decoder = dict(decoder)
        self.added_encoder = {tok.content: idx for idx, tok in decoder.items()}
        # LlamaTokenizer.__init__ adds every special token that is not added yet (at its piece id, else appended)
        for text in self.all_special_tokens:
            if text in self.added_encoder:
                continue
            idx = self.sp.piece_to_id(text)
            if self.sp.id_to_piece(idx) != text:
                idx = max([self.sp_size - 1, *self.added_decoder]) + 1
            self.added_decoder[idx] = _added(raw.get(text, text), special=True)
            self.added_encoder[text] = idx
        self.add_bos = bool(init.get("add_bos_token", True))
        self.add_eos = bool(init.get("add_eos_token", False))
        self.add_prefix_space = init.get("add_prefix_space", True) if cfg is not None else True
        self.clean_up_tokenization_spaces = bool(init.get("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(init.get("split_special_tokens", False))
        self.chat_template = self._template(init.get("chat_template"))
        self.tokenizer_config = cfg
        self.vocab_size = max([self.sp_size - 1, *self.added_decoder]) + 1
        eos = [self.token_to_id(self.special["eos_token"])] if self.special["eos_token"] else []
        for name in ("generation_config.json", "config.json"):
            eos += _ids((files[name] or {}).get("eos_token_id"))
        self.eos_token_ids: Tuple[int, ...] = tuple(dict.fromkeys(i for i in eos if i is not None))
        self.bos_id = self.token_to_id(self.special["bos_token"]) if self.special["bos_token"] else None
        self.eos_id = self.eos_token_ids[0] if self.eos_token_ids else None
        texts = sorted(self.added_encoder, key=len, reverse=True)
        self._splitter = re.compile("|".join(re.escape(t) for t in texts)) if texts else None

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _template(self, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):          # [{name, template}, ...]: transformers uses "default"
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            if "default" in named:
                return named["default"]
            raise DataError(f"{self._path('tokenizer_config.json')}: chat_template lists templates "
                            f"{sorted(map(str, named))} but none named 'default'")
        raise DataError(f"{self._path('tokenizer_config.json')}: chat_template must be a string, got "
                        f"{type(value).__name__}")

    # ------------------------------------------------------------------ vocabulary
    @property
    def all_special_tokens(self) -> List[str]:
        out = [t for t in (self.special[k] for k in SPECIAL_ATTRS) if t]
        return list(dict.fromkeys(out + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> List[int]:
        return [self.token_to_id(t) for t in self.all_special_tokens]

    def token_to_id(self, text: str) -> int:
        if text in self.added_encoder:
            return self.added_encoder[text]
        return self.sp.piece_to_id(text)

    def id_to_token(self, idx: int) -> Optional[str]:
        if idx in self.added_decoder:
            return self.added_decoder[idx].content
        return self.sp.id_to_piece(idx) if 0 <= idx < self.sp_size else None

    @property
    def added_tokens(self) -> Dict[int, AddedToken]:
        """Added tokens past the SentencePiece pieces (MiniCPM4: 73440..73447), by id."""
        return {i: t for i, t in sorted(self.added_decoder.items()) if i >= self.sp_size}

    # ------------------------------------------------------------------ encode / decode
    def split(self, text: str) -> List[Tuple[str, bool]]:
        """(chunk, is_added_token) in order, with the tokens' lstrip / rstrip / single_word applied."""
        if self.split_special_tokens or self._splitter is None:
            return [(text, False)] if text else []
        parts: List[List] = []
        pos = 0
        for m in self._splitter.finditer(text):
            parts.append([text[pos:m.start()], False])
            parts.append([m.group(0), True])
            pos = m.end()
        parts.append([text[pos:], False])
        for i, (chunk, is_tok) in enumerate(parts):
            if not is_tok:
                continue
            tok = self.added_decoder[self.added_encoder[chunk]]
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i + 1 < len(parts) else None
            if tok.rstrip and right and right[0]:
                right[0] = right[0].lstrip()
            if tok.lstrip and left and left[0]:
                left[0] = left[0].rstrip()
            if tok.single_word and left and left[0] and left[0][-1] != " ":
                left[0] += chunk
                parts[i][0] = ""
            elif tok.single_word and right and right[0] and right[0][0] != " ":
                right[0] = chunk + right[0]
                parts[i][0] = ""
        return [(c, t) for c, t in parts if c]

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        ids: List[int] = []
        for chunk, is_tok in self.split(text):
            if is_tok and chunk in self.added_encoder:
                ids.append(self.added_encoder[chunk])
            else:       # transformers: pieces as strings, then piece -> id (the same ids as sp.encode)
                ids += [self.sp.piece_to_id(p) for p in self.sp.encode(chunk, out_type=str)]
        if add_special_tokens:
            if self.add_bos and self.bos_id is not None:
                ids = [self.bos_id] + ids
            if self.add_eos and self.special["eos_token"]:
                ids = ids + [self.token_to_id(self.special["eos_token"])]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        special = set(self.all_special_tokens)
        special_ids = set(self.all_special_ids)
        tokens = []
        for idx in (int(i) for i in ids):
            if skip_special_tokens and idx in special_ids:
                continue
            tok = self.id_to_token(idx)
            if tok is not None and not (skip_special_tokens and tok in special):
                tokens.append(tok)
        legacy_added = (set(self.added_encoder) - special) | \
            {t for t in self.additional_special_tokens if self.token_to_id(t) >= self.sp_size}
        texts, current = [], []
        for tok in tokens:
            if tok in legacy_added:
                if current:
                    s = self._tokens_to_string(current, special)
                    if s:
                        texts.append(s)
                    current = []
                texts.append(tok)
            else:
                current.append(tok)
        if current:
            texts.append(self._tokens_to_string(current, special))
        text = " ".join(texts)
        return _clean_up(text) if self.clean_up_tokenization_spaces else text

    def _tokens_to_string(self, tokens: List[str], special) -> str:
        """LlamaTokenizer.convert_tokens_to_string (legacy): special tokens verbatim, a space before one."""
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens[0] = tokens[0][1:]
        out, current, prev_special = "", [], False
        for i, tok in enumerate(tokens):
            if tok in special:
                if not prev_special and i != 0:
                    out += " "
                out += self._pieces(current) + tok
                prev_special, current = True, []
            else:
                if prev_special and i == 1 and self.add_prefix_space and not tok.startswith(SPIECE_UNDERLINE):
                    out += " "
                current.append(tok)
                prev_special = False
        return out + self._pieces(current)

    def _pieces(self, pieces: List[str]) -> str:
        return self.sp.decode_pieces(pieces) if pieces else ""

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages, add_generation_prompt: bool = True, **kwargs) -> str:
        """The chat as the model's template renders it (transformers' environment and variables)."""
        if not self.chat_template:
            raise DataError(f"the tokenizer {self.dir} has no chat template (tokenizer_config.json has no "
                            "chat_template); chat needs a chat model's tokenizer")
        import jinja2
        variables = {k: v for k, v in self.special.items() if v}
        if self.additional_special_tokens:
            variables["additional_special_tokens"] = list(self.additional_special_tokens)
        variables.update(kwargs)
        try:
            return compile_chat_template(self.chat_template).render(messages=list(messages), tools=None, documents=None,
                                                       add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.TemplateError as err:
            raise DataError(f"chat template of {self.dir}: {err}") from None

    def __getstate__(self):
        return {"dir": self.dir}

    def __setstate__(self, state):
        self.__init__(state["dir"])


def _clean_up(text: str) -> str:
    """transformers' clean_up_tokenization (only when the config asks for it)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


# ---------------------------------------------------------------------- one entry for both kinds
def is_hf_tokenizer(path: str) -> bool:
    """A directory, or a tokenizer.model next to tokenizer_config.json / added_tokens.json."""
    if os.path.isdir(path):
        return True
    folder = os.path.dirname(os.path.abspath(path))
    return any(os.path.isfile(os.path.join(folder, name)) for name in HF_MARKERS)


def load_tokenizer(path: str):
    """HFTokenizer for an HF tokenizer directory (or its tokenizer.model), else our SPTokenizer.

    Both have encode(text) (BOS as the tokenizer says), decode(ids, skip_special_tokens=...),
    eos_token_ids (tuple), bos_id, add_bos, vocab_size and chat_template (None for SPTokenizer)."""
    if not path or not os.path.exists(path):
        raise DataError(f"tokenizer {path!r} does not exist")
    if is_hf_tokenizer(path):
        return HFTokenizer(path)
    return SPTokenizer(path)
