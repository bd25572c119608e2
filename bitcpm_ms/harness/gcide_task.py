"""The miniature task `bitcpm_gcide_define`: given a dictionary definition, choose its headword among 4.

Built at run time from the held-out split of the default corpus (GCIDE, never copied into the
repository): the entries whose raw text hashes into the first `validation_fraction` of [0, 1)
(`data.tasks.is_validation`, the rule `run/prepare_data.py` holds documents out by), so no model
trained on the prepared dataset has seen them. One item per entry whose first line parses as
`Headword, pos. [etymology] Definition.`:

* the definition is the first sentence of the first sense, brackets and quotation credits removed;
  entries whose definition contains the headword itself are skipped (a copy task, not a test);
* answers are nouns, adjectives and verbs, as many of each (the smallest class's held-out count);
* each item's 4 candidates are the answer and 3 headwords of other held-out entries, each with its own
  part of speech: one of each other class and one of the answer's own class, cased like the answer,
  drawn by a fixed seed. Telling the part of speech from the definition ("To ..." after `v. t.`)
  therefore narrows the choice to 2 (50%); going further needs the word itself.

Scored the way the corpus reads (headword first, as WinoGrande scores its options): each candidate is a
context `"Abdicative, a."` and the continuation is the definition; the model picks the candidate under
which the definition is most likely (lm-eval's multiple-input `multiple_choice`). Chance is 25%.

Why not 4 headwords of the answer's own part of speech (version 1): the full-precision tiny model of the
recipe study scored 26.0% +- 1.5% on it, chance; such a model has learned the dictionary's form (which
definitions follow which part of speech), not yet which word a definition belongs to.

The items are cached as JSON under $BITCPM_MS_CACHE/tasks (default ~/.cache/bitcpm_ms), keyed by the
dictionary file's size and mtime and this builder's version.
"""
import json
import os
import re

import numpy as np

from ..data.gcide import clean_gcide_entry, gcide_path
from ..data.readers import ReadStats, iter_dictd_file
from ..data.tasks import doc_hash, is_validation
from ..fileio import atomic_json

VERSION = 2
CHOICES = 4
POS = r"n\.|a\.|adj\.|adv\.|v\. t\.|v\. i\.|v\.|prep\.|conj\.|interj\.|pron\."
_HEAD = re.compile(r"^([A-Za-z][a-z]+(?:-[a-z]+)*)(,?) (" + POS + r") +(.*)$")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_NUMBERING = re.compile(r"^(?:\d+\.\s*)?(?:\d+\s+)?")
_SENTENCE = re.compile(r"^(.{12,}?[.;])(?:\s|$)")


def parse_entry(text: str):
    """(headword, separator, part of speech, definition) of a cleaned entry, or None."""
    m = _HEAD.match(text.split("\n", 1)[0])
    if not m:
        return None
    word, sep, pos, rest = m.groups()
    rest = _NUMBERING.sub("", _BRACKETS.sub("", _BRACKETS.sub("", rest)).strip()).split(" --")[0]
    rest = re.sub(r"\s+", " ", rest).strip()
    s = _SENTENCE.match(rest)
    definition = (s.group(1) if s else rest)[:160].strip()
    if len(definition) < 12 or len(word) < 3 or word.lower() in definition.lower():
        return None
    return word, sep, pos, definition


CLASSES = {"n.": "noun", "a.": "adjective", "adj.": "adjective", "v. t.": "verb", "v. i.": "verb", "v.": "verb"}


def _cased(word: str, like: str) -> str:
    return word[:1].upper() + word[1:].lower() if like[:1].isupper() else word.lower()


def build_items(path: str = None, validation_fraction: float = 0.01, seed: int = 0) -> list:
    """The task's items from the held-out GCIDE entries (see the module docstring)."""
    pools = {c: [] for c in set(CLASSES.values())}
    for raw in iter_dictd_file(gcide_path(path), ReadStats()):
        if is_validation(raw, validation_fraction):
            entry = parse_entry(clean_gcide_entry(raw))
            if entry and entry[2] in CLASSES:
                pools[CLASSES[entry[2]]].append((doc_hash(raw), entry))
    for pool in pools.values():
        pool.sort()                                   # a stable order: by the entry's hash
    per_class = min(len(p) for p in pools.values())   # as many answers of each class (chance stays 25%)
    rng = np.random.default_rng(seed)
    items = []
    for cls in sorted(pools):
        for k, (_, (word, sep, pos, definition)) in enumerate(pools[cls][:per_class]):
            def draw(c):
                while True:
                    w, _, p, _ = pools[c][int(rng.integers(len(pools[c])))][1]
                    if w.lower() != word.lower() and w.lower() not in taken:
                        taken.add(w.lower())
                        return f"{_cased(w, word)}{sep} {p}"
            taken = {word.lower()}
            others = [draw(c) for c in sorted(pools) if c != cls] + [draw(cls)]
            gold = int(rng.integers(CHOICES))
            contexts = others[:gold] + [f"{word}{sep} {pos}"] + others[gold:]
            items.append({"id": len(items), "headword": word, "pos": pos, "class": cls, "definition": definition,
                          "gold": gold, "contexts": contexts})
    return items


def cache_path(path: str = None) -> str:
    src = gcide_path(path)
    st = os.stat(src)
    root = os.environ.get("BITCPM_MS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bitcpm_ms")
    return os.path.join(root, "tasks", f"gcide_define_v{VERSION}_{st.st_size}_{int(st.st_mtime)}.json")


def load_items(path: str = None) -> list:
    """The items, from the cache or built (about 20 s) and cached."""
    cached = cache_path(path)
    if os.path.isfile(cached):
        with open(cached, encoding="utf-8") as f:
            return json.load(f)
    items = build_items(path)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    atomic_json(items, cached)
    return items
