"""Document masking in a run: the datasets' columns follow the switch; the data it needs."""
import numpy as np
import pytest

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.documents import check_document_data
from bitcpm_ms.errors import ConfigError
from bitcpm_ms.testing import make_document_mindrecord, make_mindrecord

from ..helpers import TINY_YAML

SWITCH = "model.model_config.use_eod_attn_mask_compression"


@pytest.mark.parametrize("on", [True, False])
def test_dataset_columns_follow_the_switch(on):
    cfg = load_config(TINY_YAML, {SWITCH: on})
    want = ["input_ids", "actual_seq_len"] if on else ["input_ids"]
    assert cfg.train_dataset.input_columns == want and cfg.eval_dataset.input_columns == want
    assert cfg.train_dataset_task.dataset_config.input_columns == want     # the task section follows
    cfg = load_config(TINY_YAML, {SWITCH: on, "train_dataset.construct_args_key": ["input_ids"]})
    assert cfg.train_dataset.construct_args_key == want
    with pytest.raises(ConfigError, match=f"{SWITCH} must be true or false"):
        load_config(TINY_YAML, {SWITCH: "yes"})


def test_the_switch_needs_the_column_and_checks_its_rows(tmp_path):
    plain = make_mindrecord(str(tmp_path / "plain" / "d.mindrecord"), 8, 32, 512)
    docs = make_document_mindrecord(str(tmp_path / "docs" / "d.mindrecord"), 8, 32, 512)
    for data, on, problem in ((plain, True, "has no actual_seq_len column"), (plain, False, None),
                              (docs, True, None), (docs, False, None)):
        cfg = load_config(TINY_YAML, {SWITCH: on, "train_dataset.data_loader.dataset_dir": data,
                                      "model.model_config.seq_length": 32})
        files = [str(next((tmp_path / d).glob("*.mindrecord"))) for d in ("plain", "docs") if str(tmp_path / d) == data]
        if problem:
            with pytest.raises(ConfigError, match=problem):
                check_document_data(cfg, files)
        else:
            check_document_data(cfg, files)
