"""A SentencePiece model as llama.cpp's "llama" (SPM) vocabulary, with the flags that make llama.cpp
tokenize exactly like we do.

llama.cpp's SPM tokenizer re-implements SentencePiece BPE: it merges adjacent symbols by piece
score, falls back to `<0xXX>` byte pieces, and by default prepends a space ("dummy prefix") and a
BOS token. Our tokenizers (`data/tokenizer.py`) use neither: documents are encoded without BOS and
`add_dummy_prefix=False`. So the GGUF must say `add_bos_token = false` and `add_space_prefix =
false`; both are read from the model file rather than assumed. Settings llama.cpp's SPM tokenizer
cannot reproduce (a unigram model, whitespace collapsing, a non-identity normalizer) are refused.
"""
from dataclasses import dataclass
from typing import List

from ..errors import ConversionError

# llama.cpp token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2            # sentencepiece TrainerSpec.ModelType.BPE


@dataclass
class GGUFVocab:
    pieces: List[bytes]
    scores: List[float]
    types: List[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int
    add_bos: bool             # our data never starts a document with BOS
    add_space_prefix: bool    # = the model's normalizer_spec.add_dummy_prefix
    padded: int               # [PAD<i>] entries appended to reach the model's vocabulary size


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


def sentencepiece_vocab(model_path: str, vocab_size: int, bos_id: int = None, eos_id: int = None,
                        add_bos: bool = False) -> GGUFVocab:
    """The GGUF vocabulary of a SentencePiece model for a model with `vocab_size` embedding rows.

    Raises ConversionError when the tokenizer has more pieces than the model has rows, when its
    BOS/EOS ids differ from the model config's, or when llama.cpp could not tokenize like it."""
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
    n = sp.get_piece_size()
    if n > vocab_size:
        raise ConversionError(f"vocabulary mismatch: the tokenizer {model_path} has {n} pieces but the model's "
                              f"embedding has {vocab_size} rows")
    for what, ours, theirs in (("BOS", bos_id, sp.bos_id()), ("EOS", eos_id, sp.eos_id())):
        if ours is not None and theirs >= 0 and int(ours) != theirs:
            raise ConversionError(f"vocabulary mismatch: the model config's {what} id is {ours}, the tokenizer "
                                  f"{model_path} has {what} = {theirs}")
    pieces, scores, types = [], [], []
    for i in range(n):
        pieces.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        types.append(UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else
                     UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL)
    pad = vocab_size - n
    for i in range(1, pad + 1):            # llama.cpp's convert_hf_to_gguf.py pads the same way
        pieces.append(f"[PAD{i}]".encode("utf-8"))
        scores.append(-1000.0)
        types.append(UNUSED)
    return GGUFVocab(pieces=pieces, scores=scores, types=types, bos_id=sp.bos_id(), eos_id=sp.eos_id(),
                     unk_id=sp.unk_id(), pad_id=sp.pad_id(), add_bos=bool(add_bos),
                     add_space_prefix=bool(norm.add_dummy_prefix), padded=pad)


def write_vocab(writer, vocab: GGUFVocab) -> None:
    """tokenizer.ggml.* keys on a gguf.GGUFWriter."""
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    for add, value in ((writer.add_bos_token_id, vocab.bos_id), (writer.add_eos_token_id, vocab.eos_id),
                       (writer.add_unk_token_id, vocab.unk_id), (writer.add_pad_token_id, vocab.pad_id)):
        if value >= 0:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(vocab.add_space_prefix)
