"""Text as it is generated: incremental detokenization, stop strings, and a console streamer.

SentencePiece with byte fallback may need several tokens for one character (a Chinese character is
three `<0x..>` byte tokens), so the text of a token is only known once the bytes complete. Each row
keeps its generated ids and re-decodes them (short sequences; exact by construction); text that ends
in an incomplete character (U+FFFD) or that could still be the start of a stop string is held back
until it is certain, so a streamer never prints text that is later retracted.
"""
import sys
from typing import Callable, List, Optional, Sequence

REPLACEMENT = "\ufffd"


class IncrementalText:
    """Text of one row's generated ids, released piece by piece; stops at the first stop string."""

    def __init__(self, decode: Callable[[List[int]], str], stop_strings: Sequence[str] = ()):
        self.decode = decode
        self.stop_strings = tuple(stop_strings)
        self.hold = max((len(s) for s in self.stop_strings), default=1) - 1
        self.ids: List[int] = []
        self.text = ""           # final text so far (cut at a stop string once one is found)
        self.released = 0        # characters of `text` handed out by push()
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one id; returns the newly certain text (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        text = self.decode(self.ids)
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            self.text = text[:cut]
            return self._release(len(self.text))
        self.text = text
        safe = len(text) - self.hold
        while safe > self.released and text[safe - 1] == REPLACEMENT:   # incomplete UTF-8 at the end
            safe -= 1
        return self._release(max(safe, self.released))

    def finish(self) -> str:
        """The text still held back (at the end of generation)."""
        return self._release(len(self.text))

    def _stop_at(self, text: str) -> Optional[int]:
        hits = [text.find(s) for s in self.stop_strings]
        hits = [h for h in hits if h >= 0]
        return min(hits) if hits else None

    def _release(self, upto: int) -> str:
        piece = self.text[self.released:upto]
        self.released = max(self.released, upto)
        return piece


class TextStreamer:
    """Prints the text of one row (default: the first prompt) as it is generated."""

    def __init__(self, row: int = 0, file=None):
        self.row = row
        self.file = file if file is not None else sys.stdout

    def put(self, row: int, token_id: int, text: str):
        if row == self.row and text:
            self.file.write(text)
            self.file.flush()

    def end(self):
        self.file.write("\n")
        self.file.flush()
