"""The chat header: the model under the user's name for it, a guessed prompt format, and titles
fitted to the width by terminal cells (URLs, Japanese, emoji) with "…" where cut."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.cells import cell_len

from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.tui.widgets.model_header import ModelHeader
from tests.tui.conftest import wait_ready

URL = "https://example.com/a/very/long/path/without/any/spaces/at/all/" + "x" * 120
JAPANESE = "日本語のとても長いタイトルで空白がまったくない会話の名前です" * 3
EMOJI = "🚀🚀 launch plan 🚀 " * 12
WORDS = "a title with spaces that goes on and on " * 6


def header_line(app) -> str:
    header = app.chat.header
    return header.plain


@pytest.mark.parametrize("width", [60, 120, 200])
@pytest.mark.parametrize("title", [URL, JAPANESE, EMOJI, WORDS],
                         ids=["url", "japanese", "emoji", "words"])
async def test_long_titles_are_cut_with_an_ellipsis_to_the_width(make_app, store, prefill_engine,
                                                                 width, title):
    conversation = store.create_conversation(model="r1", title=title)
    store.add_message(conversation.id, "user", "hi")
    app = make_app(engine=prefill_engine, conversation_id=conversation.id,
                   model_label="my-model")
    async with app.run_test(size=(width, 24)) as pilot:
        await wait_ready(pilot)
        await pilot.pause()
        line = header_line(app)
        room = app.chat.header.content_size.width
        assert room == width - 2  # the padding
        assert cell_len(line) <= room
        assert line.endswith("…") and not line.endswith(" …")  # no half-cut wide character
        # The title's start is there (never pushed off the line), and so is the model's name.
        shown_title = line.rsplit("│", 1)[1].strip().removesuffix("…")
        assert len(shown_title) >= 4 and title.strip().startswith(shown_title.strip())
        assert "my-model" in line
        if width >= 120:
            assert "ctx 4,096" in line  # room for the facts and a useful part of the title
            assert cell_len(shown_title) >= 20


async def test_a_short_title_is_not_cut(make_app, store, prefill_engine):
    conversation = store.create_conversation(model="r1", title="日本語 🚀")
    store.add_message(conversation.id, "user", "hi")
    app = make_app(engine=prefill_engine, conversation_id=conversation.id)
    async with app.run_test(size=(120, 24)) as pilot:
        await wait_ready(pilot)
        assert header_line(app).endswith("│  日本語 🚀")


def test_line_fits_every_width():
    """The line never exceeds its width, at any width, whatever the parts' lengths."""
    header = ModelHeader()
    header.show_model(None, problem="no model loaded — Ctrl+L: models " + "m" * 50)
    header.show_title(JAPANESE)
    for width in range(0, 220):
        line = header.line(width).plain
        assert cell_len(line) <= width, (width, line)


async def test_the_header_names_the_model_as_the_user_named_it(make_app, prefill_engine):
    """Not the GGUF's internal general.name ('localr1 scripted R1 (prefill)')."""
    app = make_app(engine=prefill_engine, model_label="my-gemma")
    async with app.run_test(size=(120, 24)) as pilot:
        await wait_ready(pilot)
        line = header_line(app)
        assert "my-gemma" in line and prefill_engine.info.name not in line


async def test_the_header_names_a_model_by_its_file_when_it_has_no_library_name(
        make_app, prefill_engine):
    app = make_app(engine=prefill_engine)  # a GGUF outside the library: its file stem
    async with app.run_test(size=(120, 24)) as pilot:
        await wait_ready(pilot)
        line = header_line(app)
        assert app.model_label in line and prefill_engine.info.path.stem.startswith(
            app.model_label) and prefill_engine.info.name not in line


async def test_a_guessed_prompt_format_shows_in_the_header(make_app, prefill_engine):
    app = make_app(engine=prefill_engine, model_label="base-model")
    async with app.run_test(size=(160, 24)) as pilot:
        await wait_ready(pilot)
        assert "guessed" not in header_line(app)
        guessed = replace(prefill_engine.info, format_note="the prompt format 'chatml' was "
                          "guessed from its vocabulary: pick one with --chat-format")
        app.chat.header.show_model(guessed, name="base-model")
        await pilot.pause()
        assert f"⚠ prompt format guessed ({guessed.chat_format})" in header_line(app)


async def test_a_model_without_a_chat_template_says_so_in_the_header(make_app,
                                                                     r1_no_template_model):
    engine = Engine.load(EngineConfig(r1_no_template_model, context_size=1024, gpu_layers=0))
    try:
        assert engine.info.format_note is not None  # guessed: the header must say so
        app = make_app(engine=engine, model_label="no-template")
        async with app.run_test(size=(160, 24)) as pilot:
            await wait_ready(pilot)
            assert "prompt format guessed" in header_line(app)
    finally:
        engine.close()


async def test_a_load_problem_in_the_header_shows_escape_sequences(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=(160, 24)) as pilot:
        await wait_ready(pilot)
        app.chat.header.show_model(None, problem="/models/clear\x1b[2J.gguf: no such file")
        await pilot.pause()
        assert "\x1b" not in header_line(app) and "clear\\x1b[2J.gguf" in header_line(app)
