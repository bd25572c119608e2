import pytest

from bitcpm_ms.data.errors import DataError
from bitcpm_ms.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SPTokenizer, train_tokenizer

from .corpora import ROUND_TRIP_SAMPLES, mixed_docs


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "t.model"
    train_tokenizer(mixed_docs(800, seed=7), str(path), vocab_size=600, max_sample_bytes=500_000)
    return str(path)


def test_special_ids_and_vocab(tok_path):
    tok = SPTokenizer(tok_path)
    sp = tok.sp
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert sp.get_piece_size() == 600
    assert sp.id_to_piece(4) == "<0x00>"                     # byte fallback pieces


@pytest.mark.parametrize("text", ROUND_TRIP_SAMPLES)
def test_round_trip_exact(tok_path, text):
    tok = SPTokenizer(tok_path)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert PAD_ID not in ids and EOS_ID not in ids and BOS_ID not in ids and UNK_ID not in ids


def test_round_trip_corpus_with_chinese(tok_path):
    tok = SPTokenizer(tok_path)
    docs = mixed_docs(200, seed=99, chinese_every=2)
    assert any("的" in d or "一" in d for d in docs)
    for d in docs:
        assert tok.decode(tok.encode(d)) == d


def test_compression_is_real(tok_path):
    tok = SPTokenizer(tok_path)
    text = " ".join(mixed_docs(50, seed=5, chinese_every=0))
    assert len(tok.encode(text)) < len(text.encode()) / 1.5    # merges learnt (tiny vocab), not bytes


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no text"):
        train_tokenizer(iter([]), str(tmp_path / "x.model"), vocab_size=300)
    with pytest.raises(DataError, match="does not exist"):
        SPTokenizer(str(tmp_path / "missing.model"))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        SPTokenizer(str(tmp_path / "junk.model"))


def test_mindformers_registered_tokenizer(tok_path):
    from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
    from bitcpm_ms.data.mf_tokenizer import BitCPMTokenizer
    assert MindFormerRegister.get_cls(MindFormerModuleType.TOKENIZER, "BitCPMTokenizer") is BitCPMTokenizer
    built = MindFormerRegister.get_instance_from_cfg(
        {"type": "BitCPMTokenizer", "vocab_file": tok_path}, MindFormerModuleType.TOKENIZER)
    sp = SPTokenizer(tok_path)
    for text in ROUND_TRIP_SAMPLES[:-1]:
        ids = built(text)["input_ids"]
        assert ids == sp.encode(text)
        assert built.decode(ids) == text
    assert built.decode(sp.encode("abc") + [EOS_ID], skip_special_tokens=True) == "abc"
    assert (built.pad_token_id, built.bos_token_id, built.eos_token_id) == (0, 1, 2)
