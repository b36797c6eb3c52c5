"""Incremental detokenization with stop strings, for streaming.

Decoding token by token breaks multi-byte characters and SentencePiece spaces, so the whole generated sequence
is decoded each step and only the new suffix is emitted. Text that could still become a stop string (or an
unfinished UTF-8 character, shown as U+FFFD) is held back until the next token decides it.

Example:
    >>> s = TextStream(lambda ids: "".join(chr(i) for i in ids), stop=["\\n\\n"])
    >>> s.push(104), s.push(105), s.push(10), s.push(10)
    ('h', 'i', '', '')
    >>> s.stopped, s.text
    (True, 'hi')
"""

from __future__ import annotations

from collections.abc import Callable


class TextStream:
    """Turns a growing token list into text deltas; `stopped` becomes True when a stop string appears."""

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str] | None = None) -> None:
        self._decode = decode
        self._stop = list(stop or [])
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded text already emitted
        self.text = ""  # the final text (set when stopped or flushed)
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now safe to emit (may be empty)."""
        self._ids.append(token_id)
        full = self._decode(self._ids)
        for s in self._stop:
            # Only search the region that the new token could have completed.
            at = full.find(s, max(0, self._sent - len(s)))
            if at != -1:
                self.stopped = True
                self.text = full[:at]
                return self._emit(self.text)
        safe = len(full)
        if full.endswith("\ufffd"):
            safe = len(full.rstrip("\ufffd"))
        safe = min(safe, len(full) - self._held_suffix(full))
        self.text = full
        return self._emit(full[:safe])

    def flush(self) -> str:
        """At the end of generation: emit whatever was held back (a partial stop string is plain text)."""
        return self._emit(self.text)

    def _held_suffix(self, full: str) -> int:
        # The longest end of `full` that is a proper prefix of some stop string.
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(full)), best, -1):
                if full.endswith(s[:n]):
                    best = n
                    break
        return best

    def _emit(self, upto: str) -> str:
        if len(upto) <= self._sent:
            return ""
        delta = upto[self._sent :]
        self._sent = len(upto)
        return delta
