"""A SentencePiece tokenizer as llama.cpp's "llama" (SPM) vocabulary, with the flags that make llama.cpp
tokenize exactly like we do: our own models (`data/tokenizer.py`) and Hugging Face tokenizer
directories such as MiniCPM4's (`data/hf_tokenizer.py`).

llama.cpp's SPM tokenizer re-implements SentencePiece BPE: it merges adjacent symbols by piece
score, falls back to `<0xXX>` byte pieces, and by default prepends a space ("dummy prefix") and a
BOS token. Both flags are read from the tokenizer, not assumed: `add_space_prefix` is the model's
`normalizer_spec.add_dummy_prefix` (false for ours and for MiniCPM4), `add_bos_token` is false for
ours (documents are encoded without BOS) and the HF tokenizer's `add_bos_token` otherwise (true for
MiniCPM4). Settings llama.cpp's SPM tokenizer cannot reproduce are refused: a unigram model,
whitespace collapsing (`remove_extra_whitespaces`), a normalizer other than identity. The real
MiniCPM4 `tokenizer.model` passes all three (BPE, `identity` without a precompiled charsmap,
`remove_extra_whitespaces: false`, `add_dummy_prefix: false`, byte fallback), so none was relaxed.

What MiniCPM4 does need is **user-defined pieces**: its model has 1,086 (`"\\n"`, `"\\t"`, `"."`,
`"..."`, `"<img>"`, `"<reserved_12>"`...). SentencePiece matches them whole before BPE (`"a...b"` ->
`a`, `...`, `b`), and no learned piece contains them, so llama.cpp's score merges cannot build them
(`".."` is not a piece: `"..."` would become three `"."`). llama.cpp's `convert_hf_to_gguf.py` types
them NORMAL and so tokenizes such text differently; we type them USER_DEFINED, which llama.cpp splits
out of the text before BPE even without `parse_special` (`tokenizer_st_partition`), as SentencePiece does.

An HF tokenizer's added tokens (MiniCPM4's `<|im_end|>` ... `<|fim_suffix|>`, 73440-73447) get their
real text with score -1000 and type CONTROL when special (USER_DEFINED otherwise), as llama.cpp's
converter does for `added_tokens_decoder` entries; llama.cpp parses CONTROL text only when asked
(`parse_special`, as llama-cli / llama-server do for prompts and chat templates).

End of generation: llama.cpp stops at EOS and at EOT (and at tokens whose text it knows, such as
`<|im_end|>`); a GGUF holds one id of each. When the tokenizer's eos token is not the SentencePiece
`</s>` but `</s>` is among its eos ids (MiniCPM4: eos `<|im_end|>`, generation_config `[2, 73440]`), the
GGUF gets EOS = `</s>` (2) and EOT = `<|im_end|>` (73440): llama.cpp then stops at both, as the HF
model does, and these are the ids llama.cpp's own conversion ends up with (its converter skips the
list-valued `eos_token_id`, its loader defaults EOS to 2 and finds EOT by the text `<|im_end|>`).
Otherwise EOS is the tokenizer's eos token. The chat template is written when the tokenizer has one.
"""
from dataclasses import dataclass
from typing import List, Optional

from ..errors import ConversionError

# llama.cpp token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2            # sentencepiece TrainerSpec.ModelType.BPE
ADDED_TOKEN_SCORE = -1000.0     # llama.cpp's converter scores added tokens and padding so


@dataclass
class GGUFVocab:
    pieces: List[bytes]
    scores: List[float]
    types: List[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int
    add_bos: bool             # our data never starts a document with BOS; MiniCPM4's tokenizer adds one
    add_space_prefix: bool    # = the model's normalizer_spec.add_dummy_prefix
    padded: int               # [PAD<i>] entries appended to reach the model's vocabulary size
    eot_id: int = -1          # end of turn (MiniCPM4: <|im_end|>), -1: none
    chat_template: Optional[str] = None


def _proto(model_path: str):
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        with open(model_path, "rb") as f:
            proto.ParseFromString(f.read())
    except OSError as err:
        raise ConversionError(f"cannot read tokenizer {model_path}: {err}") from None
    except Exception as err:     # protobuf's DecodeError
        raise ConversionError(f"{model_path} is not a SentencePiece model: {err}") from None
    if not proto.pieces:
        raise ConversionError(f"{model_path} is not a SentencePiece model (no pieces)")
    return proto


def _sp_pieces(model_path: str):
    """(SentencePieceProcessor, add_dummy_prefix, pieces, scores, types) of a model llama.cpp can reproduce."""
    import sentencepiece as spm
    proto = _proto(model_path)
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.model_type != _BPE:
        raise ConversionError(f"{model_path}: a SentencePiece {'unigram' if trainer.model_type == 1 else 'non-BPE'} "
                              "model; llama.cpp's SPM tokenizer only reproduces BPE models (prepare data with "
                              "tokenizer type bpe)")
    if norm.remove_extra_whitespaces:
        raise ConversionError(f"{model_path}: remove_extra_whitespaces=True collapses spaces, which llama.cpp's "
                              "SPM tokenizer does not do; its token ids would differ")
    if norm.name not in ("identity", "") or norm.precompiled_charsmap:
        raise ConversionError(f"{model_path}: normalizer {norm.name!r} rewrites text before tokenizing; "
                              "llama.cpp's SPM tokenizer does not, so its token ids would differ")
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    user_defined = 4           # ModelProto.SentencePiece.Type.USER_DEFINED
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        types.append(UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else
                     UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else
                     USER_DEFINED if proto.pieces[i].type == user_defined else NORMAL)
    return sp, bool(norm.add_dummy_prefix), pieces, scores, types


def _pad(pieces, scores, types, vocab_size) -> int:
    pad = vocab_size - len(pieces)
    for i in range(1, pad + 1):            # llama.cpp's convert_hf_to_gguf.py pads the same way
        pieces.append(f"[PAD{i}]".encode("utf-8"))
        scores.append(-1000.0)
        types.append(UNUSED)
    return pad


def _ids(value) -> List[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def sentencepiece_vocab(model_path: str, vocab_size: int, bos_id: int = None, eos_id: int = None,
                        add_bos: bool = False) -> GGUFVocab:
    """The GGUF vocabulary of a SentencePiece model for a model with `vocab_size` embedding rows.

    A Hugging Face tokenizer directory (or its tokenizer.model next to tokenizer_config.json /
    added_tokens.json) is read as one: see `tokenizer_vocab`.
    Raises ConversionError when the tokenizer has more pieces than the model has rows, when its
    BOS/EOS ids differ from the model config's, or when llama.cpp could not tokenize like it."""
    from ..data.hf_tokenizer import is_hf_tokenizer
    if is_hf_tokenizer(model_path):
        return tokenizer_vocab(model_path, vocab_size, bos_id, eos_id)
    sp, dummy_prefix, pieces, scores, types = _sp_pieces(model_path)
    n = len(pieces)
    if n > vocab_size:
        raise ConversionError(f"vocabulary mismatch: the tokenizer {model_path} has {n} pieces but the model's "
                              f"embedding has {vocab_size} rows")
    for what, ours, theirs in (("BOS", bos_id, sp.bos_id()), ("EOS", eos_id, sp.eos_id())):
        if ours is not None and theirs >= 0 and _ids(ours) != [theirs]:
            raise ConversionError(f"vocabulary mismatch: the model config's {what} id is {ours}, the tokenizer "
                                  f"{model_path} has {what} = {theirs}")
    pad = _pad(pieces, scores, types, vocab_size)
    return GGUFVocab(pieces=pieces, scores=scores, types=types, bos_id=sp.bos_id(), eos_id=sp.eos_id(),
                     unk_id=sp.unk_id(), pad_id=sp.pad_id(), add_bos=bool(add_bos),
                     add_space_prefix=dummy_prefix, padded=pad)


def tokenizer_vocab(tokenizer, vocab_size: int, bos_id=None, eos_id=None) -> GGUFVocab:
    """The GGUF vocabulary of a tokenizer from `data.hf_tokenizer.load_tokenizer` (or a path for it).

    SPTokenizer (our own): as `sentencepiece_vocab`. HFTokenizer: its pieces (user-defined ones typed
    USER_DEFINED), its added tokens with their text (CONTROL when special), add_bos from the tokenizer,
    EOS / EOT as the module docstring says, its chat template. `bos_id` / `eos_id`: the model config's
    (eos an int or a list), checked against the tokenizer's."""
    from ..data.errors import DataError
    from ..data.hf_tokenizer import HFTokenizer, load_tokenizer
    from ..data.tokenizer import SPTokenizer
    if isinstance(tokenizer, str):
        try:
            tokenizer = load_tokenizer(tokenizer)
        except DataError as err:
            raise ConversionError(str(err)) from None
    if isinstance(tokenizer, SPTokenizer):
        return sentencepiece_vocab(tokenizer.model_path, vocab_size, bos_id, eos_id)
    if not isinstance(tokenizer, HFTokenizer):
        raise TypeError(f"tokenizer_vocab needs an SPTokenizer, HFTokenizer or path, got {type(tokenizer).__name__}")
    sp, dummy_prefix, pieces, scores, types = _sp_pieces(tokenizer.model_file)
    where = tokenizer.dir
    if tokenizer.vocab_size > vocab_size:
        raise ConversionError(f"vocabulary mismatch: the tokenizer {where} has {tokenizer.vocab_size} tokens "
                              f"({len(pieces)} pieces + added tokens) but the model's embedding has {vocab_size} rows")
    for idx in range(len(pieces), tokenizer.vocab_size):
        tok = tokenizer.added_decoder.get(idx)
        pieces.append(tok.content.encode("utf-8") if tok else f"[UNUSED{idx}]".encode("utf-8"))
        scores.append(ADDED_TOKEN_SCORE)
        types.append(UNUSED if tok is None else CONTROL if tok.special else USER_DEFINED)
    tok_bos = tokenizer.bos_id if tokenizer.bos_id is not None else -1
    if bos_id is not None and tok_bos >= 0 and int(bos_id) != tok_bos:
        raise ConversionError(f"vocabulary mismatch: the model config's BOS id is {bos_id}, the tokenizer {where} "
                              f"has BOS = {tok_bos}")
    stops = list(tokenizer.eos_token_ids)
    bad = [i for i in _ids(eos_id) if i not in stops + [sp.eos_id()]]
    if bad:
        raise ConversionError(f"vocabulary mismatch: the model config's EOS id is {eos_id}, the tokenizer {where} "
                              f"stops at {stops}")
    eos, eot = (stops[0] if stops else sp.eos_id()), -1
    if stops and eos != sp.eos_id() and sp.eos_id() in stops:
        eos, eot = sp.eos_id(), stops[0]
    pad_text = tokenizer.special.get("pad_token")
    pad = _pad(pieces, scores, types, vocab_size)
    return GGUFVocab(pieces=pieces, scores=scores, types=types, bos_id=tok_bos, eos_id=eos, unk_id=sp.unk_id(),
                     pad_id=tokenizer.token_to_id(pad_text) if pad_text else -1, add_bos=tokenizer.add_bos,
                     add_space_prefix=dummy_prefix, padded=pad, eot_id=eot, chat_template=tokenizer.chat_template)


def write_vocab(writer, vocab: GGUFVocab) -> None:
    """tokenizer.ggml.* keys (and tokenizer.chat_template) on a gguf.GGUFWriter."""
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    for add, value in ((writer.add_bos_token_id, vocab.bos_id), (writer.add_eos_token_id, vocab.eos_id),
                       (writer.add_unk_token_id, vocab.unk_id), (writer.add_pad_token_id, vocab.pad_id),
                       (writer.add_eot_token_id, vocab.eot_id)):
        if value >= 0:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
