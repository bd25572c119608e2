"""The default corpus: GCIDE, the GNU Collaborative International Dictionary of English.

Installed by the Debian package ``dict-gcide`` (``run/setup_corpus.sh``) as
``/usr/share/dictd/gcide.dict.dz`` (dictzip, gzip-compatible, ~40 MB uncompressed) plus
``gcide.index``. Licence: GNU GPL version 2 or any later version (GPL-2.0-or-later, per the
package's copyright file and the dictionary's own notice). The text derives from Webster's
Revised Unabridged Dictionary (1913, public domain) and WordNet 1.5, edited by the GCIDE
volunteers. The text is read from
the installed package at data-preparation time; nothing of it is copied into this repository.

One document = one dictionary entry (126,000 entries). ``clean_gcide_entry`` removes the
dictionary's markup and keeps the prose of headwords, etymologies, definitions and quotations:

1. pronunciation fields ``\\Ca*lor"ic\\`` and the respelled pronunciations in parentheses
   (``(k[.a]*l[o^]r`...)``) are removed; the headword itself stays;
2. source tags (``[1913 Webster]``, ``[WordNet 1.5]``, ``[PJC]``, ``[Webster 1913 Suppl.]``,
   ...) are removed, with the stray next headword dictfmt sometimes glues behind them;
3. cross-reference braces ``{Foot pound}`` are dropped, the words stay;
4. the ASCII accent/character escapes (``[`e]``, ``['e]``, ``[=a]``, ``[ae]``, ``[deg]``,
   ``[alpha]``, ...) become Unicode characters (NFC);
5. runs of ``?`` (characters lost in the original conversion, mostly Greek) are removed;
6. lines are unwrapped: each blank-line separated block (a sense, a quotation) becomes one
   line, inner runs of spaces are collapsed (and " ," becomes ","); blocks are joined with
   ``"\\n"``.
"""
from __future__ import annotations

import os
import re
import shutil
import unicodedata
from typing import Optional

from .errors import DataError

DEFAULT_GCIDE_PATH = "/usr/share/dictd/gcide.dict.dz"
DEBIAN_PACKAGE = "dict-gcide"
LICENSE = "GPL-2.0-or-later"

_COMBINING = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303",
              "=": "\u0304", ".": "\u0323", "-": "\u0306", "*": "\u030a", ",": "\u0327"}
_NAMED = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ",
    "deg": "°", "root": "√", "sect": "§", "pounds": "£", "ng": "ŋ", "imac": "ī",
    "aum": "ä", "oo": "oo", "=oo": "o\u0304o", "oo^": "o\u0306o", "=ae": "ǣ", "th": "th",
    "udd": "ü", "add": "ä", "asl": "a", "dsdot": "ḍ", "bprime": "″", "prime": "′",
    "flat": "♭", "sharp": "♯", "natural": "♮", "bar": "|", "sec": "″", "min": "′",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ",
    "mu": "μ", "nu": "ν", "xi": "ξ", "omicron": "ο", "pi": "π", "rho": "ρ", "sigma": "σ",
    "Sigma": "Σ", "tau": "τ", "upsilon": "υ", "phi": "φ", "chi": "χ", "psi": "ψ",
    "omega": "ω", "Omega": "Ω", "frac12": "½", "frac14": "¼", "frac34": "¾", "times": "×",
    "divide": "÷", "cre": "˘", "hand": "☞", "star": "*", "dagger": "†", "ddagger": "‡",
    "para": "¶", "middot": "·", "cent": "¢", "minus": "−", "plusmn": "±", "infin": "∞",
}
# accent escape: [`e]  ['e]  [^o]  ["u]  [~n]  [=a]  [.a]  [-e]  [*a]  [,c]   or   [a^] (breve)
_ACCENT_PRE = re.compile(r"\[([`'^\"~=.\-*,])([A-Za-z])\]")
_ACCENT_POST = re.compile(r"\[([A-Za-z])\^\]")
_NAMED_RE = re.compile(r"\[(" + "|".join(sorted((re.escape(k) for k in _NAMED), key=len, reverse=True)) + r")\]")
_PRON = re.compile(r"[ \t]*\\[^\\]{0,160}\\")      # may wrap onto the next line
_RESPELL = re.compile(r"[ \t]*\((?=[^()\s]*\*)[^()\s]+\)")
_SOURCE = re.compile(r"\[[^\[\]]*?(?:Webster|WordNet|PJC|Century Dict|RHUD|RDH|MI11|\+ ?AS\b)[^\[\]]*\]")
_SOURCE_LINE = re.compile(r"^[ \t]*" + _SOURCE.pattern + r"[ \t]*(?:[^\s]+[ \t]*)?$", re.M)
_QMARKS = re.compile(r"[ \t]?\?{2,}")
_BRACES = re.compile(r"[{}]")
_SPACES = re.compile(r"[ \t]+")
_BLOCKS = re.compile(r"\n[ \t]*\n+")
_SPACE_COMMA = re.compile(r" +,")      # left where a pronunciation field was removed


def _accent(m: re.Match) -> str:
    return m.group(2) + _COMBINING[m.group(1)]


def clean_gcide_entry(text: str) -> str:
    """Turn one raw GCIDE dictd entry into plain prose (see module docstring)."""
    text = text.replace("\r", "")
    text = _SOURCE_LINE.sub("", text)
    text = _SOURCE.sub("", text)
    text = _PRON.sub("", text)
    text = _RESPELL.sub("", text)
    text = _NAMED_RE.sub(lambda m: _NAMED[m.group(1)], text)
    text = _ACCENT_PRE.sub(_accent, text)
    text = _ACCENT_POST.sub(lambda m: m.group(1) + "\u0306", text)
    text = _QMARKS.sub("", text)
    text = _BRACES.sub("", text)
    blocks = []
    for block in _BLOCKS.split(text):
        line = _SPACES.sub(" ", " ".join(l.strip() for l in block.split("\n") if l.strip())).strip()
        if line:
            blocks.append(line)
    out = _SPACE_COMMA.sub(",", "\n".join(blocks))
    return unicodedata.normalize("NFC", out)


def gcide_path(path: Optional[str] = None) -> str:
    """Path of the installed GCIDE dictionary, or a ``DataError`` that says how to install it."""
    p = path or os.environ.get("BITCPM_GCIDE", DEFAULT_GCIDE_PATH)
    if os.path.isfile(p):
        return p
    hint = ("run `bash run/setup_corpus.sh` (as root it installs the Debian package "
            f"{DEBIAN_PACKAGE}; apt-get install -y {DEBIAN_PACKAGE})")
    if not shutil.which("apt-get"):
        hint = ("no apt-get here: install the GCIDE dictd files some other way and set "
                "BITCPM_GCIDE=/path/to/gcide.dict.dz, or pass your own corpus with --input")
    raise DataError(f"default corpus {p} not found: {hint}")
