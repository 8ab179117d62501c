"""Speculative decoding and the KV cache in the chat app: F4's draft model, KV cache type and
flash attention (saved with the conversation; a change reloads the model like the context size),
a draft that cannot be found, the header's facts and the status line's acceptance."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from textual.widgets import Input, Select, Static

from localr1.config import Settings
from localr1.store import Store
from localr1.tui.screens.settings import SettingsScreen
from tests.draft_stats import draft_turn_stats
from tests.tui.conftest import SIZE, send, wait_for, wait_ready


async def _open_f4(pilot) -> SettingsScreen:
    app = pilot.app
    await pilot.press("f4")
    await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
    return app.screen


async def test_f4_draft_and_kv_options_reload_the_model_and_are_kept(make_app, store: Store,
                                                                     r1_prefill_model: Path):
    app = make_app(model_path=r1_prefill_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert (app.engine_config.draft, app.engine_config.kv_type) == (None, "f16")
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()
        screen = await _open_f4(pilot)
        assert screen.query_one("#draft_model", Input).value == "none"
        assert screen.query_one("#kv_type", Select).value == "f16"
        assert screen.query_one("#flash_attn", Select).value == "auto"
        screen.query_one("#draft_model", Input).value = "lookup"
        screen.query_one("#kv_type", Select).value = "q8_0"
        screen.query_one("#flash_attn", Select).value = "on"
        first_engine = app.engine
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.model_state == "ready" and app.engine is not None
                       and app.engine is not first_engine, what="the reload")
        config = app.engine_config
        assert (config.draft, config.kv_type, config.flash_attn) == ("lookup", "q8_0", "on")
        await send(pilot, "and again")
        assert app.chat._last_answer().finish_reason == "stop"

    with Store.open(store.path) as other:
        params = other.conversation(conversation_id).params
    assert (params["draft_model"], params["kv_type"], params["flash_attn"]) == \
        ("lookup", "q8_0", "on")

    reopened = make_app(store=store.path, model_path=r1_prefill_model,
                        conversation_id=conversation_id)
    async with reopened.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: reopened.model_state == "ready", what="the model")
        assert reopened.engine_config.draft == "lookup"
        assert reopened.engine_config.kv_type == "q8_0"
        screen = await _open_f4(pilot)
        assert screen.query_one("#draft_model", Input).value == "lookup"
        assert screen.query_one("#kv_type", Select).value == "q8_0"


async def test_f4_refuses_a_missing_draft_and_a_quantized_cache_without_flash(make_app,
                                                                            prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        screen = await _open_f4(pilot)
        screen.query_one("#draft_model", Input).value = "r1:1.5b"
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = str(screen.query_one("#error", Static).render())
        assert "draft model 'r1:1.5b" in error and "not installed" in error
        assert app.screen is screen  # still open, to correct it
        screen.query_one("#draft_model", Input).value = ""
        screen.query_one("#kv_type", Select).value = "q4_0"
        screen.query_one("#flash_attn", Select).value = "off"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "needs flash attention" in str(screen.query_one("#error", Static).render())
        screen.query_one("#flash_attn", Select).value = "auto"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")
        assert app.chat.conv_settings.draft_model is None  # still the config's (none)
        assert app.chat.conv_settings.kv_type == "q4_0"


async def test_a_configured_draft_that_is_missing_is_said_and_left_out(make_app,
                                                                     r1_prefill_model):
    app = make_app(model_path=r1_prefill_model,
                   settings=Settings(gpu_layers=0, draft_model="r1:1.5b"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.engine_config.draft is None
        said = [n.message for n in app._notifications if n.title == "No draft model"]
        assert len(said) == 1 and "localr1 pull r1:1.5b" in said[0]
        await send(pilot, "hello")  # answers without it, and says it only once
        assert app.chat._last_answer().finish_reason == "stop"
        assert sum(n.title == "No draft model" for n in app._notifications) == 1


async def test_status_line_shows_acceptance_only_when_drafting(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        status = app.chat.status
        app.chat.turns.show_idle_status(draft_turn_stats(400, 312))
        assert "draft 78% accepted" in status.render().plain
        app.chat.turns.show_idle_status(draft_turn_stats(0, 0))
        assert "draft" not in status.render().plain


async def test_header_shows_kv_cache_and_draft_when_set(make_app, prefill_engine):
    app = make_app(engine=prefill_engine, model_label="tiny")
    async with app.run_test(size=(160, 24)) as pilot:
        await wait_ready(pilot)
        header = app.chat.header
        assert "KV" not in header.plain and "draft" not in header.plain
        info = replace(prefill_engine.info, kv_type="q8_0", flash_attn="on", draft="r1:1.5b")
        header.show_model(info, name="tiny")
        assert "KV q8_0  ·  flash attention on  ·  draft r1:1.5b" in header.plain


async def test_the_config_draft_applies_until_a_conversation_chooses(make_app, store: Store,
                                                                    r1_prefill_model: Path):
    # `chat --draft lookup` reaches the app as its settings, like config.toml's draft_model.
    config = Settings(gpu_layers=0, draft_model="lookup", kv_type="q8_0")
    own = store.create_conversation(model="r1", params={"draft_model": "none"})
    store.add_message(own.id, "user", "hi")
    follows = make_app(model_path=r1_prefill_model, settings=config)
    async with follows.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: follows.model_state == "ready", what="the model")
        assert (follows.engine_config.draft, follows.engine_config.kv_type) == ("lookup", "q8_0")
    chose = make_app(model_path=r1_prefill_model, settings=config, conversation_id=own.id)
    async with chose.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: chose.model_state == "ready", what="the model")
        assert (chose.engine_config.draft, chose.engine_config.kv_type) == (None, "q8_0")


async def test_a_drafted_turn_shows_its_acceptance_and_the_header_its_draft(
        make_app, r1_prefill_model: Path):
    from localr1.paths import app_paths

    models = app_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(r1_prefill_model, models / "tiny-draft.gguf")  # drafts for its twin
    app = make_app(model_path=r1_prefill_model,
                   settings=Settings(gpu_layers=0, draft_model="tiny-draft"))
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert "draft tiny-draft" in app.chat.header.plain
        assert "accepted" not in app.chat.status.render().plain
        await send(pilot, "hello")
        assert app.chat._last_answer().finish_reason == "stop"
        await wait_for(pilot, lambda: "accepted" in app.chat.status.render().plain,
                       what="the acceptance")
        assert "draft 100% accepted" in app.chat.status.render().plain
