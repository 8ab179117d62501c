"""A request's `stop` strings over a streaming answer: the answer ends where one first appears,
without it. Text that could still turn into a stop string is held back until it cannot."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.stopped = False
        self._held = ""

    def feed(self, text: str) -> str:
        """The text that is safe to send now ("" once stopped)."""
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        buf = self._held + text
        hits = [at for at in (buf.find(stop) for stop in self.stops) if at >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buf[:min(hits)]
        keep = max((_partial_len(buf, stop) for stop in self.stops), default=0)
        self._held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep]

    def finish(self) -> str:
        """What was held back, at the end of the answer: it never became a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _partial_len(buf: str, stop: str) -> int:
    """Length of the longest end of `buf` that is a proper beginning of `stop`."""
    for size in range(min(len(stop) - 1, len(buf)), 0, -1):
        if buf.endswith(stop[:size]):
            return size
    return 0
