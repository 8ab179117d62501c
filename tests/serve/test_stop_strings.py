"""Stop strings over a streaming answer, for any chunking."""

from __future__ import annotations

import pytest

from localr1.serve.stop_strings import StopMatcher

TEXT = "Hello! How may I help you today?"


def _stream(stops: tuple[str, ...], chunks: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(chunk) for chunk in chunks) + matcher.finish()
    return out, matcher.stopped


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_any_chunking_gives_the_text_before_the_first_stop(size):
    chunks = [TEXT[i:i + size] for i in range(0, len(TEXT), size)]
    assert _stream(("help", "How"), chunks) == ("Hello! ", True)
    assert _stream(("nowhere",), chunks) == (TEXT, False)
    assert _stream(("today?!",), chunks) == (TEXT, False)  # a partial match at the end is text
    assert _stream((), chunks) == (TEXT, False)


def test_text_that_may_become_a_stop_is_held_back_until_it_cannot():
    matcher = StopMatcher(("END",))
    assert matcher.feed("abc E") == "abc "
    assert matcher.feed("N") == ""
    assert matcher.feed("x") == "ENx"
    assert matcher.feed("EN") == ""
    assert matcher.feed("D and more") == ""
    assert matcher.stopped and matcher.finish() == ""
