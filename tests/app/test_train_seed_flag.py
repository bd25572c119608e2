"""`bitcpm-train --seed N` sets the config's seed (init and data order) of a training run."""
from types import SimpleNamespace

from bitcpm_ms.app.cli import parse_train_args, seeded
from bitcpm_ms.app.config import load_config
from bitcpm_ms.testing import TINY_YAML


def test_seed_flag_sets_the_config_seed_of_a_training_run():
    args, overrides = parse_train_args(["--config", TINY_YAML, "--seed", "2"])
    assert args.seed == 2
    config = seeded(load_config(TINY_YAML, overrides), args)
    assert config.seed == 2
    predict = seeded(load_config(TINY_YAML, {"run_mode": "predict"}), SimpleNamespace(seed=5))
    assert predict.seed == 1234                      # predict: the sampling seed only
    assert seeded(load_config(TINY_YAML), SimpleNamespace(seed=None)).seed == 1234
