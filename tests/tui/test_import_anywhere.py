"""Import a GGUF file from inside the app at any time: `i` in the models screen and "Import a
GGUF file" in the command palette open the import dialog (a path and a name); the model is
registered in place under that name, listed and selected; errors stay in the dialog."""

from __future__ import annotations

import pytest
from textual.command import CommandList
from textual.widgets import Button, Input, Static

from localr1.errors import ModelFileError
from localr1.models.library import check_model_name, find_installed, import_model
from localr1.paths import app_paths
from localr1.tui.screens.import_gguf import ImportScreen
from localr1.tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, wait_for


async def _fill(pilot, path: str, name: str) -> None:
    dialog = pilot.app.screen
    assert isinstance(dialog, ImportScreen)
    box = dialog.query_one("#import-path", Input)
    box.value = path
    box.focus()
    await pilot.pause()
    await pilot.press("enter")  # on to the name box
    assert dialog.focused is dialog.query_one("#import-name", Input)
    dialog.query_one("#import-name", Input).value = name
    await pilot.press("enter")


async def test_models_screen_imports_a_file_under_a_name(make_app, prefill_engine, tmp_path,
                                                         r1_original_model, r1_prefill_model):
    import_model(r1_prefill_model, "aaa-first", models_dir=app_paths().models_dir)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_for(pilot, lambda: not screen.installed_table.loading, what="the list")
        await pilot.press("i")
        await pilot.pause()
        # A bad file: the reason, in the dialog, which stays open.
        bad = tmp_path / "notes.gguf"
        bad.write_text("not a model")
        await _fill(pilot, str(bad), "notes")
        dialog = app.screen
        error = dialog.query_one("#import-error")
        await wait_for(pilot, lambda: "notes.gguf" in str(error.render())
                       and "checking" not in str(error.render()), what="the error")
        assert app.screen is dialog
        # A good one, with a name: listed, and the cursor on it.
        await _fill(pilot, str(r1_original_model), "my-model")
        await wait_for(pilot, lambda: app.screen is screen, what="the dialog to close")
        table = screen.installed_table
        await wait_for(pilot, lambda: table.row_count == 2 and not table.loading,
                       what="the new row")
        assert table.cursor_row == 1 and screen.focused is table
        assert str(table.get_cell_at((1, 0))) == "my-model"
    model = find_installed("my-model", app_paths().models_dir)
    assert model is not None and model.path == r1_original_model.absolute()
    assert model.source == "import" and not model.owned  # registered in place, not copied


async def test_command_palette_opens_the_import_dialog(make_app, prefill_engine,
                                                       r1_original_model):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.chat)]
        assert titles.count("Import a GGUF file") == 1
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"import a gguf")
        commands = app.screen.query_one(CommandList)

        def highlighted() -> str:
            index = commands.highlighted
            return "" if index is None else str(commands.get_option_at_index(index).prompt)

        await wait_for(pilot, lambda: highlighted().startswith("Import a GGUF file"),
                       what="the command highlighted")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportScreen), what="the dialog")
        await _fill(pilot, str(r1_original_model), "from-palette")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen),
                       what="the models screen")
        table = app.screen.installed_table
        await wait_for(pilot, lambda: table.row_count == 1 and not table.loading
                       and str(table.get_cell_at((table.cursor_row, 0))) == "from-palette",
                       what="the new row")
        # Esc from the models screen goes back to the chat.
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")


async def _open_dialog(pilot) -> ImportScreen:
    app = pilot.app
    await pilot.pause()
    app.push_screen(ImportScreen(app_paths().models_dir))
    await wait_for(pilot, lambda: isinstance(app.screen, ImportScreen)
                   and app.screen.query("#import-go"), what="the dialog")
    return app.screen


def _error_text(dialog: ImportScreen) -> str:
    return str(dialog.query_one("#import-error", Static).render())


async def test_the_import_dialog_takes_one_submit_at_a_time(make_app, prefill_engine,
                                                            r1_original_model):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await _open_dialog(pilot)
        dialog.query_one("#import-path", Input).value = str(r1_original_model)
        dialog.query_one("#import-name", Input).value = "only-once"
        # No await between these: the worker cannot report back in between.
        dialog._go()
        assert dialog.busy
        assert all(box.disabled for box in dialog.query(Input))
        assert dialog.query_one("#import-go", Button).disabled
        dialog._go()  # a second enter while the file is checked
        assert len([w for w in app.workers if w.group == "import"]) == 1
        await wait_for(pilot, lambda: not isinstance(app.screen, ImportScreen),
                       what="the dialog to close")
    assert find_installed("only-once", app_paths().models_dir) is not None


@pytest.mark.parametrize("name, why", [
    ("../evil", "cannot be a model name"),
    ("x\x1b[2J", "cannot be a model name"),
    ("r1", "catalog model's name"),
    ("r1:7b", "catalog model's name"),
])
async def test_the_import_dialog_refuses_names_the_cli_refuses(make_app, prefill_engine,
                                                               r1_original_model, name, why):
    with pytest.raises(ModelFileError, match=why):
        check_model_name(name)
    with pytest.raises(ModelFileError, match=why):  # `localr1 import --name` says the same
        import_model(r1_original_model, name, models_dir=app_paths().models_dir)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await _open_dialog(pilot)
        await _fill(pilot, str(r1_original_model), name)
        await wait_for(pilot, lambda: why in _error_text(dialog), what="the refusal")
        assert "\x1b" not in _error_text(dialog)
        assert not dialog.busy and app.focused is dialog.query_one("#import-path", Input)
    assert find_installed(name, app_paths().models_dir) is None or name == "r1"


async def test_escape_sequences_in_a_typed_path_are_shown_not_sent(make_app, prefill_engine,
                                                                   tmp_path):
    path = str(tmp_path / "evil\x1b[2J.gguf")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await _open_dialog(pilot)
        await _fill(pilot, path, "evil")
        await wait_for(pilot, lambda: "evil" in _error_text(dialog)
                       and "checking" not in _error_text(dialog), what="the error")
        text = _error_text(dialog)
        assert "\x1b" not in text and "\\x1b[2J" in text
