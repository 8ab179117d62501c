"""`localr1 history ...`, driven through click's CliRunner on the `history` group.

The main CLI registers the group later; `_Root` stands in for it here, turning LocalR1Error
into one line and exit 1 the way localr1.cli.main does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from localr1.cli.history import history
from localr1.errors import LocalR1Error
from localr1.store import Store


class _Root(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LocalR1Error as exc:
            raise click.ClickException(str(exc)) from None


_root = _Root("localr1")
_root.add_command(history)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(_root, ["history", *args], input=input, catch_exceptions=False)


def imported_id(result: Result) -> int:
    """The one new id in `history import`'s summary line."""
    return int(re.fullmatch(r"imported 1 conversation \(id (\d+)\)\n", result.stdout)[1])


@pytest.fixture
def chats() -> dict[str, int]:
    """Three conversations in the app's database (under the per-test LOCALR1_HOME)."""
    with Store.open() as store:
        sky = store.create_conversation(model="r1-7b", first_user_message="Why is the sky blue?")
        store.add_message(sky.id, "assistant", "Rayleigh scattering of sunlight.",
                          reasoning="Think about wavelengths.", thinking_seconds=4.2)
        store.add_message(sky.id, "user", "And at sunset?")
        writer = store.assistant_writer(sky.id, parent_id=store.branch(sky.id)[-1].id,
                                        model="r1-7b", flush_interval=0)
        writer.add("answer", "Longer path through the air, so")  # never finished
        bread = store.create_conversation(model="r1-8b",
                                          first_user_message="Bread recipe \x1b[31mplease")
        store.add_message(bread.id, "assistant", "Flour, water, salt, time.")
        old = store.create_conversation(first_user_message="Old chat")
        store.set_archived(old.id, True)
        store.set_pinned(bread.id, True)
        return {"sky": sky.id, "bread": bread.id, "old": old.id}


def test_list(chats: dict[str, int]) -> None:
    result = run("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "MODEL", "MSGS", "TITLE"]
    assert lines[1].startswith("*") and "r1-8b" in lines[1]  # pinned first
    assert "Bread recipe \\x1b[31mplease" in lines[1]  # escapes shown, never executed
    assert lines[2].startswith(" ") and "Why is the sky blue?" in lines[2]
    assert lines[2].split()[4] == "4"  # messages
    assert "Old chat" not in result.output
    assert "Old chat  [archived]" in run("list", "--archived").output
    assert len(run("list", "-n", "1").output.splitlines()) == 2


def test_list_json(chats: dict[str, int]) -> None:
    data = json.loads(run("list", "--json", "--archived").output)
    assert [c["id"] for c in data] == [chats["bread"], chats["old"], chats["sky"]]
    sky = next(c for c in data if c["id"] == chats["sky"])
    assert (sky["title"], sky["model"], sky["message_count"], sky["pinned"]) == \
        ("Why is the sky blue?", "r1-7b", 4, False)


def test_list_empty() -> None:
    assert run("list").output == "No saved conversations.\n"


def test_show_plain_text(chats: dict[str, int]) -> None:
    result = run("show", str(chats["sky"]))
    assert result.exit_code == 0
    out = result.output
    assert out.startswith("Why is the sky blue?\nconversation ")
    assert "User:\nWhy is the sky blue?" in out
    assert "Assistant:\nRayleigh scattering of sunlight." in out
    assert "Assistant (interrupted: the answer was cut off):\nLonger path" in out
    assert "wavelengths" not in out
    with_reasoning = run("show", str(chats["sky"]), "--reasoning").output
    assert "[reasoning (4.2 s)]\nThink about wavelengths.\n[/reasoning]" in with_reasoning


def test_show_json_and_markdown(chats: dict[str, int]) -> None:
    data = json.loads(run("show", str(chats["sky"]), "--json").output)
    assert data["conversation"]["title"] == "Why is the sky blue?"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][-1]["finish_reason"] == "incomplete"
    assert "reasoning" not in data["messages"][1]
    data = json.loads(run("show", str(chats["sky"]), "--json", "--reasoning").output)
    assert data["messages"][1]["reasoning"] == "Think about wavelengths."
    md = run("show", str(chats["sky"]), "--markdown", "--reasoning").output
    assert md.startswith("# Why is the sky blue?\n\n**User**\n\n")
    assert "<details><summary>Thought for 4.2 s</summary>" in md
    assert "**Assistant** (interrupted)" in md


def test_show_alternates_are_numbered(chats: dict[str, int]) -> None:
    with Store.open() as store:
        first = store.branch(chats["bread"])[0]
        store.add_message(chats["bread"], "assistant", "Regenerated.", parent_id=first.id)
    assert "Assistant [2/2]:\nRegenerated." in run("show", str(chats["bread"])).output


def test_errors_are_one_line_and_exit_1(chats: dict[str, int]) -> None:
    result = run("show", "999")
    assert result.exit_code == 1
    assert result.output == "Error: no conversation 999\n"


def test_search(chats: dict[str, int]) -> None:
    result = run("search", "sunlight")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[0] == str(chats["sky"]) and "(message" in lines[0]
    assert "Rayleigh scattering of sunlight." in lines[1]
    assert run("search", "wavelengths").output == "No matches.\n"
    assert "Think about wavelengths." in run("search", "wavelengths", "--reasoning").output
    hits = json.loads(run("search", "sky", "--json").output)
    assert {h["message_id"] is None for h in hits} == {True, False}
    assert all("**sky**" in h["snippet"].lower() for h in hits)
    for hostile in ('"', "AND", "NEAR(", "col:x", "(((", "^x", "*"):
        assert run("search", hostile).exit_code == 0
    assert run("search", "--", "-x").exit_code == 0


def test_export_import_json_round_trip(chats: dict[str, int], tmp_path: Path) -> None:
    path = tmp_path / "sky.json"
    result = run("export", str(chats["sky"]), "--format", "json", "-o", str(path))
    assert result.exit_code == 0, result.output
    exported = json.loads(path.read_text())
    assert exported["format"] == "localr1-conversation"
    result = run("import", "--duplicate", str(path))  # into the history it came from
    assert result.exit_code == 0
    new_id = imported_id(result)
    assert new_id not in chats.values()
    with Store.open() as store:
        again = store.export_conversation(new_id)
    assert [m["content"] for m in again["messages"]] == \
        [m["content"] for m in exported["messages"]]
    assert again["conversation"]["title"] == exported["conversation"]["title"]


def test_settings_are_shown_exported_and_imported(chats: dict[str, int], tmp_path: Path) -> None:
    settings = {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "max_tokens": 300,
                "seed": 11, "reasoning_budget": 0, "context_size": 2048}
    with Store.open() as store:
        store.set_params(chats["sky"], settings)
        store.set_system_prompt(chats["sky"], "Be brief.")
    shown = json.loads(run("show", str(chats["sky"]), "--json").output)["conversation"]
    assert (shown["system_prompt"], shown["params"]) == ("Be brief.", settings)
    path = tmp_path / "sky.json"
    assert run("export", str(chats["sky"]), "-o", str(path)).exit_code == 0
    new_id = imported_id(run("import", "--duplicate", str(path)))
    with Store.open() as store:
        copy = store.conversation(new_id)
    assert (copy.system_prompt, copy.params) == ("Be brief.", settings)


def test_export_all_and_import_the_bundle(chats: dict[str, int], tmp_path: Path) -> None:
    path = tmp_path / "all.json"
    assert run("export", "--all", "-o", str(path)).exit_code == 0
    bundle = json.loads(path.read_text())
    assert bundle["format"] == "localr1-conversations"
    assert len(bundle["conversations"]) == 3  # archived too
    result = run("import", "--duplicate", str(path))
    assert re.fullmatch(r"imported 3 conversations \(ids \d+-\d+\)\n", result.stdout)
    assert len(json.loads(run("list", "--json", "--archived").output)) == 6


def test_importing_the_same_file_again_skips_what_is_present(chats: dict[str, int],
                                                             tmp_path: Path) -> None:
    path = tmp_path / "all.json"
    assert run("export", "--all", "-o", str(path)).exit_code == 0
    result = run("import", str(path))  # the history it was exported from
    assert result.exit_code == 0
    assert result.stdout == "imported 0 conversations, skipped 3 already present\n"
    assert len(json.loads(run("list", "--json", "--archived").output)) == 3
    with Store.open() as store:  # one grew since the export: still present
        store.add_message(chats["bread"], "user", "And rye?")
        store.delete_conversation(chats["old"])
    result = run("import", str(path))
    assert re.fullmatch(r"imported 1 conversation \(id \d+\), skipped 2 already present\n",
                        result.stdout)
    assert run("import", str(path)).stdout == \
        "imported 0 conversations, skipped 3 already present\n"
    assert len(json.loads(run("list", "--json", "--archived").output)) == 3


def test_a_file_imported_elsewhere_twice_and_forced_with_duplicate(chats: dict[str, int],
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "sky.json"
    assert run("export", str(chats["sky"]), "-o", str(path)).exit_code == 0
    with Store.open() as store:
        for id in chats.values():
            store.delete_conversation(id)
    first = run("import", str(path))
    assert first.stdout.startswith("imported 1 conversation (id ")
    assert run("import", str(path)).stdout == \
        "imported 0 conversations, skipped 1 already present\n"
    exported = json.loads(path.read_text())
    # The same conversation twice in one file comes in once.
    with Store.open() as store:
        store.delete_conversation(imported_id(first))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([exported, exported]))
    assert re.fullmatch(r"imported 1 conversation \(id \d+\), skipped 1 already present\n",
                        run("import", str(twice)).stdout)
    assert run("import", str(twice)).stdout == \
        "imported 0 conversations, skipped 2 already present\n"
    forced = run("import", "--duplicate", str(twice))
    assert re.fullmatch(r"imported 2 conversations \(ids \d+-\d+\)\n", forced.stdout)
    # An edited message makes it a different conversation.
    exported["messages"][0]["content"] = "Why is the sea blue?"
    path.write_text(json.dumps(exported))
    assert run("import", str(path)).stdout.startswith("imported 1 conversation (id ")
    assert len(json.loads(run("list", "--json").output)) == 4


def test_a_hand_made_export_without_times_is_imported_once(tmp_path: Path) -> None:
    hand_made = {"format": "localr1-conversation", "version": 1,
                 "conversation": {"title": "hand made"},
                 "messages": [{"id": 1, "role": "user", "content": "hi"}]}
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(hand_made))
    assert imported_id(run("import", str(path)))
    assert run("import", str(path)).stdout == \
        "imported 0 conversations, skipped 1 already present\n"
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([hand_made, hand_made]))
    assert run("import", str(twice)).stdout == \
        "imported 0 conversations, skipped 2 already present\n"
    # Another title, or another text, is another conversation.
    other_title = {**hand_made, "conversation": {"title": "made by hand"}}
    other_text = {**hand_made, "messages": [{"id": 1, "role": "user", "content": "hello"}]}
    path.write_text(json.dumps([other_title, other_text]))
    assert re.fullmatch(r"imported 2 conversations \(ids \d+-\d+\)\n",
                        run("import", str(path)).stdout)
    assert len(json.loads(run("list", "--json").output)) == 3


def test_export_markdown(chats: dict[str, int], tmp_path: Path) -> None:
    path = tmp_path / "sky.md"
    assert run("export", str(chats["sky"]), "-o", str(path)).exit_code == 0  # md from suffix
    text = path.read_text()
    assert text.startswith("# Why is the sky blue?") and "**Assistant** (interrupted)" in text
    stdout = run("export", "--all", "--format", "md").output
    assert stdout.count("\n---\n") == 2


def test_export_needs_one_of_id_or_all(chats: dict[str, int]) -> None:
    assert run("export").exit_code == 2
    assert run("export", str(chats["sky"]), "--all").exit_code == 2


def test_import_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run("import", str(bad))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "not valid JSON (line 1" in result.output
    assert result.output.count("\n") == 1
    bad.write_text(json.dumps({"hello": "world"}))
    result = run("import", str(bad))
    assert result.exit_code == 1 and "not a localr1 export" in result.output
    result = run("import", str(tmp_path / "missing.json"))
    assert result.exit_code == 1 and "No such file" in result.output


def test_rm_asks_first(chats: dict[str, int]) -> None:
    result = run("rm", str(chats["sky"]), input="n\n")
    assert result.exit_code == 1
    assert "Delete this conversation?" in result.output
    assert "Why is the sky blue?" in run("list").output
    result = run("rm", str(chats["sky"]), input="y\n")
    assert result.exit_code == 0 and f"deleted conversation {chats['sky']}" in result.output
    assert "Why is the sky blue?" not in run("list").output
    result = run("rm", "--yes", str(chats["bread"]), str(chats["old"]))
    assert result.exit_code == 0
    assert run("list", "--archived").output == "No saved conversations.\n"
    assert run("rm", "--yes", "12345").output == "Error: no conversation 12345\n"


def test_the_module_imports_only_click() -> None:
    code = ("import sys, localr1.cli.history; "
            "heavy = [m for m in ('localr1.store.database', 'sqlite_utils', 'sqlite3', 'textual', "
            "'llama_cpp') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
