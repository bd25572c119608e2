"""A random ternary model, its tokenizer (the prepared test dataset's) and a small local multiple-choice
lm-eval task: everything the harness tests need, made in the test session."""
import json
import random

import pytest

from bitcpm_ms.harness.lm import BitCPMLM
from bitcpm_ms.testing import random_bitcpm

from ..data.corpora import WORDS

MODEL = dict(seq_length=32, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=128,
             vocab_size=512, scale_emb=12, scale_depth=1.4, dim_model_base=16)
QUANT = dict(enabled=True, quant_space="ternary", group_size=32)
TASK_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="session")
def tokenizer(small_dataset):
    from bitcpm_ms.data.tokenizer import SPTokenizer
    out = small_dataset[0]
    return SPTokenizer(str(out / "tokenizer.model"))


def context_of_length(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """An English-like text that encodes to exactly n_tokens ids (without the prefix id)."""
    rng = random.Random(seed)
    for _ in range(200):
        words = []
        while len(tokenizer.encode(" ".join(words))) < n_tokens:
            words.append(rng.choice(WORDS))
        if len(tokenizer.encode(" ".join(words))) == n_tokens:
            return " ".join(words)
    raise AssertionError(f"no text of {n_tokens} tokens found")


@pytest.fixture(scope="session")
def mc_task(tmp_path_factory, tokenizer):
    """(include dir, docs): 6 questions with 3-4 choices of 1 to 4 tokens; question 0's context is
    max_length - 1 tokens long with the prefix id (so 2+ token continuations are truncated on the left)."""
    d = tmp_path_factory.mktemp("tiny_mc")
    rng = random.Random(1)
    docs = [{"question": context_of_length(tokenizer, MODEL["seq_length"] - 2), "choices": ["water", "heat light",
             "the old man", "good"], "label": 0}]
    for i in range(5):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "?"
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(rng.choice((3, 4)))]
        docs.append({"question": q, "choices": choices, "label": i % len(choices)})
    data = d / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in docs), encoding="utf-8")
    (d / "tiny_mc.yaml").write_text(TASK_YAML.format(path=data), encoding="utf-8")
    return d, docs


@pytest.fixture(scope="session")
def fake_quant_lm(tokenizer):
    net = random_bitcpm(MODEL, QUANT, seed=5)
    return BitCPMLM.from_model(net, tokenizer, batch_size=4)
