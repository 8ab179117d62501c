"""Streaming a long Markdown reply into the TUI: does the UI cost per token stay flat?

A headless `localr1 chat` streams a 4,000-token Markdown reply (headings, paragraphs, lists,
code blocks). A thread replays it at 1,000 tokens/s into the same `TurnBuffer` the generating
worker fills; the chat screen's flush timer drains it into the message view exactly as in a
real turn, and the final render at the end of the reply is timed too.

UI time is the event loop's busy time (every callback and task step, Textual's layout and
rendering included), measured by wrapping asyncio's Handle._run. The busy time between two
flushes is charged to the tokens the first of them rendered. We report the UI time per token
over the first 500 and the last 500 tokens (the end must stay within 2x the start) and
whether the UI kept up (no backlog: it showed the last token within half a second of its
arrival). The longest gap between two updates and the longest event-loop stall (how long a
key press could wait) are reported too.

    python bench/tui_stream.py [--tokens 4000] [--rate 1000] [--runs 3] [--single]

--single streams into one Markdown widget (no frozen segments), the design measured in
ARCHITECTURE.md, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localr1.config import Settings  # noqa: E402
from localr1.engine.events import TurnStats  # noqa: E402
from localr1.paths import app_paths  # noqa: E402
from localr1.store import Store  # noqa: E402
from localr1.tui.app import LocalR1App  # noqa: E402
from localr1.tui.messages import TurnEnded  # noqa: E402
from localr1.tui.prefs import TuiPrefs  # noqa: E402
from localr1.tui.turn_runner import TurnRunner  # noqa: E402
from localr1.tui.widgets.streaming_markdown import StreamingMarkdown  # noqa: E402

PROSE = ("the model streams tokens while the terminal keeps up with every paragraph list and "
         "code block so that nothing stalls and the reader sees text appear at a steady pace "
         "without waiting for a full render of everything that came before")
WORDS = PROSE.split()


def markdown_tokens(count: int) -> list[str]:
    """About `count` tokens of varied Markdown, as the pieces a model would emit."""
    tokens: list[str] = []
    n = 0

    def words(k: int) -> list[str]:
        nonlocal n
        out = []
        for _ in range(k):
            out.append(" " + WORDS[n % len(WORDS)])
            n += 1
        return out

    section = 0
    while len(tokens) < count:
        section += 1
        tokens += [f"## Section {section}", "\n\n"]
        tokens += ["This"] + words(60) + [".", "\n\n"]
        for item in range(4):
            tokens += ["-", f" **point {item + 1}**:"] + words(10) + ["\n"]
        tokens += ["\n", "1.", " first"] + words(8) + ["\n", "2.", " second"] + words(8)
        tokens += ["\n\n", "```python", "\n"]
        for line in range(8):
            tokens += ["def", f" step_{section}_{line}", "(x", "):", "\n", "    ", "return",
                       " x", " *", f" {line}", "\n"]
        tokens += ["```", "\n\n", "And"] + words(40) + [".", "\n\n"]
    return tokens[:count]


@dataclass
class Tick:
    at: float
    delivered: int  # tokens handed to the view so far (after this tick's drain)
    busy: float  # event-loop busy seconds so far (at the start of this tick)
    render_ms: float  # how long this tick's drain-and-write took


@dataclass
class RunResult:
    start_ms: float
    end_ms: float
    lag_s: float
    max_gap_s: float
    feed_seconds: float
    final_render_ms: float
    segments_peak: int
    pieces_after: int  # pieces left after the final render (1: the whole text re-rendered)
    stall_stream_ms: float  # the longest the event loop was unavailable while streaming
    stall_final_ms: float  # ... and during the final full render
    ticks: list[Tick] = field(default_factory=list)

    @property
    def kept_up(self) -> bool:
        """No backlog built up: the last token was on screen within half a second."""
        return self.lag_s <= 0.5


class BusyClock:
    """Event-loop busy time: the sum of the time spent in every callback and task step."""

    def __init__(self) -> None:
        self.total = 0.0
        self._original = asyncio.events.Handle._run

    def install(self) -> None:
        original, clock = self._original, self

        def timed_run(handle) -> None:
            start = time.perf_counter()
            try:
                original(handle)
            finally:
                clock.total += time.perf_counter() - start

        asyncio.events.Handle._run = timed_run

    def remove(self) -> None:
        asyncio.events.Handle._run = self._original


def per_token_ms(ticks: list[Tick], lo: int, hi: int) -> float:
    """UI busy milliseconds per token for the tokens [lo, hi)."""
    cost = 0.0
    for this, following in zip(ticks, ticks[1:], strict=False):
        previous = ticks[ticks.index(this) - 1].delivered if ticks.index(this) else 0
        got = this.delivered - previous
        if got <= 0:
            continue
        overlap = max(0, min(hi, this.delivered) - max(lo, previous))
        cost += (following.busy - this.busy) * overlap / got
    return cost / (hi - lo) * 1000


async def run_once(tokens: list[str], rate: float, single: bool) -> RunResult:
    tmp = Path(tempfile.mkdtemp(prefix="tui-stream-"))
    store = Store.open(tmp / "history.db")
    app = LocalR1App(store=store, settings=Settings(), prefs=TuiPrefs(), paths=app_paths())
    clock = BusyClock()
    ticks: list[Tick] = []
    delivered = 0
    original_render = TurnRunner._render_buffer

    async def recording_render(self, turn):
        nonlocal delivered
        busy = clock.total
        started = time.perf_counter()
        drained = await original_render(self, turn)
        delivered = drained.tokens
        now = time.perf_counter()
        ticks.append(Tick(now, delivered, busy, (now - started) * 1000))
        return drained

    TurnRunner._render_buffer = recording_render
    StreamingMarkdown.SEGMENT_CHARS = 10**12 if single else 1200
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("escape")  # no model: leave the welcome screen
            await pilot.pause()
            chat = app.chat
            log = chat.log_view
            widget = chat._answer_widget(None)
            await log.mount(widget)
            log.anchor()
            clock.install()
            stalls: list[tuple[float, float]] = []  # (when, how late a 10 ms sleep woke up)

            async def probe() -> None:
                while True:
                    before = time.perf_counter()
                    await asyncio.sleep(0.01)
                    now = time.perf_counter()
                    stalls.append((now, now - before - 0.01))

            prober = asyncio.get_running_loop().create_task(probe())
            turn = chat.turns.start_stream("send", 0, "bench", widget, None)
            feed_done = threading.Event()
            feed_times: list[float] = []

            def feed() -> None:
                start = time.perf_counter()
                for i, token in enumerate(tokens):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    turn.buffer.add("answer", token)
                feed_times.extend([start, time.perf_counter()])
                feed_done.set()

            thread = threading.Thread(target=feed, daemon=True)
            thread.start()
            segments_peak = 0
            while not feed_done.is_set() or delivered < len(tokens):
                segments_peak = max(segments_peak, widget.answer.segments)
                await asyncio.sleep(0.02)
            lag = time.perf_counter() - feed_times[1]
            stats = TurnStats("stop", 10, 0, len(tokens), 0, False, False, 0, 0.01, rate, None,
                              len(tokens) / rate)
            finish_start = time.perf_counter()
            chat.post_message(TurnEnded(turn.id, stats, None))
            while chat.turn is not None:
                await asyncio.sleep(0.005)
            final_render_ms = (time.perf_counter() - finish_start) * 1000
            prober.cancel()
            clock.remove()
            assert widget.answer_text == "".join(tokens)
            pieces_after = widget.answer.segments
    finally:
        clock.remove()
        TurnRunner._render_buffer = original_render
        store.close()
    n = len(tokens)
    window = min(500, n // 4)
    gaps = [b.at - a.at for a, b in zip(ticks, ticks[1:], strict=False)]
    return RunResult(start_ms=per_token_ms(ticks, 0, window),
                     end_ms=per_token_ms(ticks, n - window, n), lag_s=lag,
                     max_gap_s=max(gaps, default=0.0),
                     feed_seconds=feed_times[1] - feed_times[0],
                     final_render_ms=final_render_ms, segments_peak=segments_peak,
                     pieces_after=pieces_after,
                     stall_stream_ms=max((late for at, late in stalls if at < finish_start),
                                         default=0.0) * 1000,
                     stall_final_ms=max((late for at, late in stalls if at >= finish_start),
                                        default=0.0) * 1000,
                     ticks=ticks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=1000.0, help="tokens per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single", action="store_true",
                        help="one Markdown widget for the whole reply (the naive design)")
    args = parser.parse_args()
    tokens = markdown_tokens(args.tokens)
    results = []
    for run in range(args.runs):
        result = asyncio.run(run_once(tokens, args.rate, args.single))
        results.append(result)
        print(f"run {run + 1}: first 500 {result.start_ms:.2f} ms/token, last 500 "
              f"{result.end_ms:.2f} ms/token ({result.end_ms / result.start_ms:.2f}x), "
              f"flushes {len(result.ticks)}, longest gap {result.max_gap_s * 1000:.0f} ms, "
              f"caught up {result.lag_s * 1000:.0f} ms after the last token, feed "
              f"{result.feed_seconds:.2f} s, longest event-loop stall "
              f"{result.stall_stream_ms:.0f} ms; final render {result.final_render_ms:.0f} ms "
              f"(longest stall {result.stall_final_ms:.0f} ms), pieces at most "
              f"{result.segments_peak}, after it {result.pieces_after}", flush=True)
    start = statistics.median(r.start_ms for r in results)
    end = statistics.median(r.end_ms for r in results)
    kept_up = all(r.kept_up for r in results)
    mode = "one widget" if args.single else "frozen pieces + streaming tail"
    print(f"\n{mode}, {args.tokens} tokens at {args.rate:.0f} tokens/s, median of "
          f"{args.runs}: UI {start:.2f} ms/token over the first 500, {end:.2f} ms/token over "
          f"the last 500 ({end / start:.2f}x, must be <= 2x): "
          f"{'FLAT' if end <= 2 * start else 'GROWS'}; kept up: {'yes' if kept_up else 'NO'}; "
          f"final full render {statistics.median(r.final_render_ms for r in results):.0f} ms")
    if end > 2 * start or not kept_up:
        sys.exit(1)


if __name__ == "__main__":
    main()
