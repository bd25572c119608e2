import pytest

from bitcpm_ms.data.packing import PrepareConfig, prepare_dataset

from .corpora import mixed_docs


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A small text corpus: two .txt files (blank-line separated docs), one with Chinese."""
    d = tmp_path_factory.mktemp("corpus")
    docs = mixed_docs(600, seed=1)
    (d / "a.txt").write_text("\n\n".join(docs[:300]) + "\n", encoding="utf-8")
    (d / "b.txt").write_text("\n\n".join(docs[300:]) + "\n", encoding="utf-8")
    return d, docs


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, corpus_dir):
    """Prepared dataset: vocab 512, seq_length 32, no shuffle, in-process tokenization."""
    d, docs = corpus_dir
    out = tmp_path_factory.mktemp("prepared") / "ds"
    cfg = PrepareConfig(input=str(d), output_dir=str(out), vocab_size=512, seq_length=32,
                        validation_fraction=0.1, shard_samples=64, shuffle=False, num_workers=0,
                        progress=False, tokenizer_sample_bytes=1_000_000)
    man = prepare_dataset(cfg, log=lambda m: None)
    return out, man, cfg, docs
