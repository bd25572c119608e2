"""Incremental text: held back while a character or a stop string is incomplete, cut at a stop string."""
import io

from bitcpm_ms.inference import IncrementalText, TextStreamer

# a byte-level "tokenizer": id = one UTF-8 byte, decoded with replacement like SentencePiece's byte fallback
decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
ids_of = lambda s: list(s.encode("utf-8"))                          # noqa: E731


def stream(text, stops=()):
    inc = IncrementalText(decode, stops)
    pieces = []
    for t in ids_of(text):
        pieces.append(inc.push(t))
        if inc.stopped:
            break
    pieces.append(inc.finish())
    return inc, pieces


def test_plain_text_streams_token_by_token():
    inc, pieces = stream("abc")
    assert pieces == ["a", "b", "c", ""] and inc.text == "abc" and not inc.stopped


def test_multibyte_character_is_released_once_complete():
    inc, pieces = stream("a中b")
    assert pieces == ["a", "", "", "中", "b", ""]
    assert "\ufffd" not in "".join(pieces)


def test_stop_string_cuts_and_is_never_printed():
    inc, pieces = stream("hello\n\nworld", stops=["\n\n"])
    assert inc.stopped and inc.text == "hello" and "".join(pieces) == "hello"
    assert all("\n" not in p for p in pieces)


def test_partial_stop_string_is_released_at_the_end():
    inc, pieces = stream("ab END", stops=["ENDX"])
    assert not inc.stopped and "".join(pieces) == "ab END"


def test_text_streamer_prints_one_row():
    out = io.StringIO()
    s = TextStreamer(row=1, file=out)
    s.put(0, 5, "zero")
    s.put(1, 6, "one")
    s.end()
    assert out.getvalue() == "one\n"
