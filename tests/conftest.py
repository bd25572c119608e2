"""Shared test setup: MindSpore in GRAPH_MODE on CPU (bitcpm_ms is installed by run/setup.sh), and a
small prepared dataset for the data and evaluation tests."""
import mindspore as ms
import pytest

from bitcpm_ms.data import PrepareConfig, prepare_dataset

from .data.corpora import mixed_docs

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture
def parallel_context():
    """parallel_context(**kw) sets MindSpore's auto-parallel context for one test, reset afterwards."""
    def set_ctx(**kw):
        ms.set_auto_parallel_context(**kw)
    yield set_ctx
    ms.reset_auto_parallel_context()


@pytest.fixture(params=[ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def mode(request):
    """Run a test in PyNative and in graph mode, restoring graph mode afterwards."""
    old = ms.get_context("mode")
    ms.set_context(mode=request.param, device_target="CPU")
    yield request.param
    ms.set_context(mode=old)


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
