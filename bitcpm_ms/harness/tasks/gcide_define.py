"""Hooks of bitcpm_gcide_define.yaml (lm-eval loads this file by path): the dataset, built at run time
from the held-out GCIDE entries (bitcpm_ms/harness/gcide_task.py), and the multiple-input fields."""


def load(**kwargs):
    """lm-eval's custom_dataset: a DatasetDict with one `test` split (kwargs: task metadata, unused)."""
    import datasets
    from bitcpm_ms.harness.gcide_task import load_items
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(load_items())})


def doc_to_text(doc):
    return doc["gold"]           # multiple input: the index of the right context


def doc_to_choice(doc):
    return list(doc["contexts"])


def doc_to_target(doc):
    return doc["definition"]
