"""The miniature task's builder on a small dictd dictionary written in the test (GCIDE's format)."""
import pytest

from bitcpm_ms.harness.gcide_task import build_items, parse_entry

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
ENTRIES = [
    "Abdicative, a. [L. abdicativus.] Causing, or implying, abdication. [R.] --Bailey.",
    "Ablins, adv. [See Able.] Perhaps. [Scot.]",
    "Accruer, n. (Law) The act of accruing; accretion; as, title by accruer.",
    "Achromatize, v. t. [imp. & p. p. Achromatized.] [Gr. 'a priv.] To deprive of color; to make achromatic.",
    "Acrospire, n. [Gr. ? + ?.] (Bot.) The sprout at the end of a seed when it begins to germinate.",
    "Bedaff, v. t. To make a daff or fool of.",
    "Tenantable, a. Fit to be rented; in a condition suitable for a tenant.",
    "Swap, n. A blow; a stroke.",
    "Untighten, v. t. To make less tight or tense.",
    "Shoal, a. Having little depth; shallow.",
    "Sample, n. Example; pattern.",
    "Currently, adv. In a current manner.",
]


def b64(n: int) -> str:
    out = ""
    while True:
        out = B64[n % 64] + out
        n //= 64
        if not n:
            return out


@pytest.fixture
def dictionary(tmp_path):
    body, index = b"", []
    for text in ENTRIES:
        raw = (text + "\n\n").encode()
        index.append(f"{text.split(',')[0]}\t{b64(len(body))}\t{b64(len(raw))}")
        body += raw
    (tmp_path / "mini.dict").write_bytes(body)
    (tmp_path / "mini.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    return str(tmp_path / "mini.dict")


def test_entries_parse_into_headword_pos_and_first_sentence():
    assert parse_entry(ENTRIES[0]) == ("Abdicative", ",", "a.", "Causing, or implying, abdication.")
    assert parse_entry(ENTRIES[3])[2:] == ("v. t.", "To deprive of color;")
    assert parse_entry("abducent adj. 1. 1 (physiol) drawing away from the midline of the body")[1:3] == ("", "adj.")
    assert parse_entry("25th adj. 1. coming next after the twenty-fourth") is None          # not a word
    assert parse_entry("Sample, n. A sample; a specimen.") is None       # the definition contains the headword


def test_items_balance_the_classes_and_mix_the_parts_of_speech(dictionary):
    items = build_items(dictionary, validation_fraction=1.0)             # every entry "held out" here
    assert len(items) == 9                                               # 3 nouns, 3 adjectives, 3 verbs; no adverb
    assert sorted(x["class"] for x in items) == ["adjective"] * 3 + ["noun"] * 3 + ["verb"] * 3
    kinds = {"n.": "noun", "a.": "adjective", "v. t.": "verb"}
    for x in items:
        assert x["contexts"][x["gold"]] == f"{x['headword']}, {x['pos']}"
        assert len(set(x["contexts"])) == 4
        classes = sorted(kinds[c.split(", ", 1)[1]] for c in x["contexts"])
        assert classes.count(x["class"]) == 2 and len(set(classes)) == 3  # its own class twice, each other once
    assert build_items(dictionary, validation_fraction=1.0) == items      # deterministic
