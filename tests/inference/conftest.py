"""Shared small models for the inference tests (session scope: each graph shape compiles once)."""
import pytest

from bitcpm_ms.inference.generation import as_decoder
from bitcpm_ms.quant.convert import convert_model
from bitcpm_ms.testing import random_bitcpm

# GQA (4 query heads on 2 KV heads), MiniCPM scalings on, 2 layers: compiles in seconds
SMALL = dict(seq_length=64, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=128,
             vocab_size=512, scale_emb=12, scale_depth=1.4, dim_model_base=16)
PROMPTS = [[5, 17, 33, 100, 7], [9, 8, 300, 41, 77, 12, 13, 250, 3, 4, 19], [44]]


def quant(act_bits):
    return dict(enabled=True, quant_space="ternary", group_size=32, eps=1e-5, act_bits=act_bits)


@pytest.fixture(scope="session")
def fake_quant():
    net = random_bitcpm(SMALL, quant(None), seed=1)
    return net, as_decoder(net)     # the CachedLM generate(net, ...) uses too


@pytest.fixture(scope="session")
def packed_a8():
    net = random_bitcpm(SMALL, quant(8), seed=2)
    convert_model(net)
    return net, as_decoder(net)     # the CachedLM generate(net, ...) uses too
