"""The streaming Markdown view: pieces while streaming, a whole-render result at the end."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.containers import VerticalScroll

from localr1.tui.markdown_split import code_blocks, cuts_are_block_boundaries, find_split_point
from localr1.tui.widgets.streaming_markdown import MessageMarkdown, StreamingMarkdown
from tests.tui.conftest import markdown_text

REPLY = "".join(
    f"## Part {i}\n\nSome *prose* for part {i}, long enough to matter. " * 3 + "\n\n"
    f"- a point\n- another point\n\n1. first\n\n2. second (a loose list)\n\n"
    f"```python\ndef f{i}(x):\n\n    return x\n```\n\n> a quote\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    for i in range(12))


class Harness(App):
    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield StreamingMarkdown(id="streamed")


async def test_streamed_pieces_end_as_a_whole_render_would():
    app = Harness()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one("#streamed", StreamingMarkdown)
        for start in range(0, len(REPLY), 97):  # a flush every ~25 tokens
            await view.write(REPLY[start:start + 97])
        assert view.segments > 3  # it froze pieces on the way
        await view.finish(REPLY)
        await pilot.pause()
        whole = MessageMarkdown(REPLY)
        await app.query_one(VerticalScroll).mount(whole)
        await pilot.pause()
        assert markdown_text(view) == markdown_text(whole)


def test_split_points_avoid_fences_lists_and_indented_lines():
    text = "para one\n\n```\ncode\n\nmore code\n```\n\n- item\n\n- item\n\n    indented\n\nend"
    cut = find_split_point(text, min_chars=1)
    assert text[cut:] == "end"
    assert find_split_point("para\n\n", 1) is None  # the next block has not started yet
    assert find_split_point(text, min_chars=len(text)) is None


def test_cut_check_against_the_whole_parse():
    text = "1. a\n\n2. b\n\nafter"
    assert not cuts_are_block_boundaries(text, [text.index("2.")])
    assert cuts_are_block_boundaries(text, [text.index("after")])


def test_code_blocks():
    blocks = code_blocks("x\n\n```python\nprint(1)\n```\n\n    indented\n")
    assert [(b.language, b.code) for b in blocks] == [("python", "print(1)\n"),
                                                       ("", "indented\n")]
    assert blocks[0].summary == "python, 1 line"
