"""MindFormers registration of the lossless SentencePiece tokenizer (imports mindformers).

Kept apart from ``tokenizer.py`` so that the packing worker processes never import MindFormers.
YAML: ``processor.tokenizer.type: BitCPMTokenizer`` with ``auto_register:
bitcpm_ms.data.mf_tokenizer.BitCPMTokenizer`` (or import this module before building).
"""
from mindformers.models.llama.llama_tokenizer import LlamaTokenizer as _LlamaTokenizer
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from .tokenizer import BOS_ID, BOS_PIECE, EOS_ID, EOS_PIECE, PAD_ID, PAD_PIECE, UNK_ID, UNK_PIECE

__all__ = ["BitCPMTokenizer"]


@MindFormerRegister.register(MindFormerModuleType.TOKENIZER)
class BitCPMTokenizer(_LlamaTokenizer):
    """MindFormers tokenizer over a SentencePiece model trained by ``train_tokenizer``.

    YAML: ``processor.tokenizer: {type: BitCPMTokenizer, vocab_file: .../tokenizer.model}``.
    Differs from ``LlamaTokenizer`` in being exactly lossless: ``tokenize`` is plain
    SentencePiece (no dummy prefix, no special-token parsing of the text) and ``decode`` is
    ``SentencePieceProcessor.decode`` of the ids (special ids skipped on request)."""

    def __init__(self, vocab_file, unk_token=UNK_PIECE, bos_token=BOS_PIECE, eos_token=EOS_PIECE,
                 pad_token=PAD_PIECE, add_bos_token=False, add_eos_token=False,
                 clean_up_tokenization_spaces=False, **kwargs):
        kwargs.setdefault("legacy", True)
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token,
                         eos_token=eos_token, pad_token=pad_token, add_bos_token=add_bos_token,
                         add_eos_token=add_eos_token,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    def tokenize(self, text, pair=None, add_special_tokens=False, **kwargs):
        return self.sp_model.encode(text, out_type=str)

    def _tokenize(self, text, **kwargs):
        return self.sp_model.encode(text, out_type=str)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode_pieces(list(tokens))

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None,
                spaces_between_special_tokens=True, **kwargs):
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        ids = [int(i) for i in token_ids]
        if skip_special_tokens:
            special = {PAD_ID, BOS_ID, EOS_ID, UNK_ID} | set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        return self.sp_model.decode(ids)
