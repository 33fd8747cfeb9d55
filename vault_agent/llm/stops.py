"""Stop strings over a streamed answer (the OpenAI API's `stop`): text is let through as soon as it
can no longer be the start of a stop string, and everything from the first stop string on is cut."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""  # text that might be the start of a stop string, not yet let through

    def feed(self, piece: str) -> str:
        """The part of the answer (so far) that is safe to show after `piece`."""
        if self.stopped:
            return ""
        text = self._held + piece
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped, self._held = True, ""
            return text[: min(cuts)]
        keep = max((self._partial_suffix(text, s) for s in self.stops), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back when the answer ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    @staticmethod
    def _partial_suffix(text: str, stop: str) -> int:
        """Length of the longest end of `text` that is a proper beginning of `stop`."""
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if stop.startswith(text[-n:]):
                return n
        return 0
