"""`localr1 history` against hostile input: odd import files and ids give one error line and
exit 1 (never a traceback, never a half import), a read-only data folder still reads, and
what it writes (exports, Markdown, JSON) is private and free of raw control characters."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from localr1.errors import LocalR1Error
from localr1.paths import app_paths
from localr1.store import Store, StoreError
from localr1.store.json_text import json_text
from localr1.store.transfer import EXPORT_FORMAT, EXPORT_VERSION
from tests.test_history_cli import _root, imported_id

# ESC, a C1 CSI (U+009B), DEL, BEL, NUL; \n and \t are kept as they are.
CONTROLS = "a\x1b[31mred\x9b2Jcsi\x7fdel\x07bel\x00nul\tTab\nline"




def run(*args: str) -> Result:
    return CliRunner().invoke(_root, ["history", *args], catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, \
        result.output
    return result.output


def strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def export_of(**conversation) -> dict:
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
            "conversation": {"title": "t", **conversation},
            "messages": [{"id": 1, "parent_id": None, "role": "user", "content": "hi"}]}


@pytest.fixture
def chat() -> int:
    with Store.open() as store:
        c = store.create_conversation(model="m", system_prompt="sys " + CONTROLS,
                                      first_user_message="q " + CONTROLS)
        store.add_message(c.id, "assistant", "answer " + CONTROLS, reasoning="r " + CONTROLS)
        return c.id


def _snapshot() -> tuple:
    with Store.open() as store:
        return tuple(store._rows(sql)[0]["n"] for sql in (
            "SELECT count(*) AS n FROM conversations", "SELECT count(*) AS n FROM messages",
            "SELECT coalesce(max(id), 0) AS n FROM conversations"))


# ---- import files ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, reason", [
    (json.dumps(export_of(title="x", params={"seed": 2**63})), "seed"),
    (json.dumps({**export_of(), "messages": [{"id": 1, "parent_id": None, "role": "user",
                                              "content": "hi", "prompt_tokens": 2**64}]}),
     "'prompt_tokens' has the wrong type"),
    (json.dumps(export_of(title="x\ud800y")), "'title' has the wrong type"),
    ('{"format": "localr1-conversation", "version": 1, "conversation": {"title": '
     '"\\udc80"}, "messages": []}', "'title' has the wrong type"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    (json.dumps(export_of(params={"x": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]})),
     "not a plain JSON value"),
    ("[" + "1" * 5000 + "]", "not valid JSON"),
    ('{"format": "localr1-conversation", "version": ' + "9" * 30 + "}",
     "unsupported export version an integer past 64 bits"),
    (json.dumps(export_of(pinned="yes")), "'pinned' has the wrong type"),
    (json.dumps(export_of(params=[1])), "'params' has the wrong type"),
    (json.dumps(export_of(params={"temperature": "hot"})), "temperature cannot be 'hot'"),
    ('{"format": "localr1-conversation", "version": 1, "conversation": {"params": '
     '{"temperature": NaN}}, "messages": []}', "temperature cannot be nan"),
    ('{"format": "localr1-conversation", "version": 1, "conversation": {"title": "t"}, '
     '"messages": [{"id": 1, "role": "user", "content": "x", "ttft_ms": Infinity}]}',
     "'ttft_ms' has the wrong type"),
    (json.dumps({**export_of(), "messages": [{"id": 2**70, "role": "user"}]}),
     "needs an integer 'id'"),
    (json.dumps({**export_of(), "messages": {"id": 1}}), "'messages' must be a list"),
    (json.dumps(export_of(**{"\x1b[2Jkey": 1})), "unknown conversation field '\\x1b[2Jkey'"),
    (json.dumps([export_of(), "junk"]), "conversation 2: not a localr1 export"),
    ("[]", "nothing to import"),
    ("\"just a string\"", "not a localr1 export"),
])
def test_hostile_import_files_are_one_line_and_change_nothing(
        chat: int, tmp_path: Path, text: str, reason: str) -> None:
    before = _snapshot()
    path = tmp_path / "hostile.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    output = one_line_error(run("import", str(path)))
    assert reason in output
    assert "\x1b" not in output
    assert _snapshot() == before


def test_an_import_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"title": "caf\xe9"}')
    assert "can't decode" in one_line_error(run("import", str(path)))


# ---- conversation ids ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["show", "--markdown"],
                                     ["rm", "--yes"], ["export"]])
@pytest.mark.parametrize("cid, message", [
    ("9223372036854775808", "Error: no conversation 9223372036854775808\n"),
    ("99999999999999999999999999999", "Error: no conversation 99999999999999999999999999999\n"),
    ("9223372036854775807", "Error: no conversation 9223372036854775807\n"),
    ("0", "Error: no conversation 0\n"),
    ("-5", "Error: not a conversation id: '-5' (ids are positive whole numbers)\n"),
    ("abc", "Error: not a conversation id: 'abc' (ids are positive whole numbers)\n"),
    ("1e3", "Error: not a conversation id: '1e3' (ids are positive whole numbers)\n"),
])
def test_ids_that_cannot_be_conversations_are_one_line(chat: int, command: list[str], cid: str,
                                                       message: str) -> None:
    result = run(*command, "--", cid)
    one_line_error(result)
    assert result.output == message


# ---- a read-only data folder -----------------------------------------------------------------


@pytest.fixture
def read_only_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A history on a real filesystem remounted read-only (root writes through chmod)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        db = mount_point / "localr1.db"
        monkeypatch.setenv("LOCALR1_DB", str(db))
        with Store.open(db) as store:
            c = store.create_conversation(first_user_message="Why is the sky blue?")
            store.add_message(c.id, "assistant", "Rayleigh scattering.")
        assert not Path(f"{db}-wal").exists()  # a clean close: only the database is left
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        yield c.id
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_read_only_data_folder_still_lists_shows_and_searches(read_only_data: int) -> None:
    cid = read_only_data
    assert "Why is the sky blue?" in run("list").output
    shown = run("show", str(cid), "--json")
    assert shown.exit_code == 0, shown.output
    assert [m["content"] for m in json.loads(shown.output)["messages"]][1] == \
        "Rayleigh scattering."
    assert run("show", str(cid)).exit_code == 0
    found = run("search", "Rayleigh")
    assert found.exit_code == 0 and str(cid) in found.output
    assert json.loads(run("export", str(cid)).output)["conversation"]["id"] == cid
    # Writing is what fails, as one line.
    assert "read-only" in one_line_error(run("rm", "--yes", str(cid)))


def test_read_only_open_of_a_v1_file_reads_it_without_upgrading(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "store_v1.db"
    path = tmp_path / "v1.db"
    path.write_bytes(fixture.read_bytes())
    with Store.open(path, read_only=True) as store:
        assert store.list_conversations()[0].params == {"temperature": 0.6, "top_p": 0.95}
        with pytest.raises(StoreError, match="readonly"):
            store.set_pinned(1, False)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")] == \
        ["m001_initial"]
    conn.close()


# ---- what history writes ---------------------------------------------------------------------


def test_exports_are_created_private(chat: int, tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "old.json").write_text("readable by others")
        (tmp_path / "old.json").chmod(0o644)
        for name in ("chat.json", "chat.md", "old.json"):  # replacing a file makes it private
            assert run("export", str(chat), "-o", str(tmp_path / name)).exit_code == 0
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)


def _assert_no_raw_controls(text: str) -> None:
    raw = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f]
    assert raw == [], raw


def test_markdown_shows_control_characters_visibly(chat: int, tmp_path: Path) -> None:
    shown = run("show", str(chat), "--markdown", "--reasoning").output
    _assert_no_raw_controls(shown)
    assert "a\\x1b[31mred\\x9b2Jcsi\\x7fdel\\x07bel\\x00nul\tTab\nline" in shown
    assert run("export", str(chat), "--format", "md", "--reasoning", "-o",
               str(tmp_path / "c.md")).exit_code == 0
    written = (tmp_path / "c.md").read_text(encoding="utf-8")
    _assert_no_raw_controls(written)
    assert written.count("\\x9b2Jcsi") == 5  # title, system prompt, question, reasoning, answer


def test_json_escapes_control_characters_and_round_trips(chat: int, tmp_path: Path) -> None:
    for args in (["show", str(chat), "--json", "--reasoning"], ["export", str(chat)],
                 ["list", "--json"], ["search", "--json", "answer"]):
        text = run(*args).output
        _assert_no_raw_controls(text)
        assert "\\u009b" in text or args[0] == "search"
        strict_json(text)
    assert run("export", str(chat), "-o", str(tmp_path / "c.json")).exit_code == 0
    written = (tmp_path / "c.json").read_text(encoding="utf-8")
    _assert_no_raw_controls(written)
    new_id = imported_id(run("import", "--duplicate", str(tmp_path / "c.json")))
    with Store.open() as store:
        assert store.branch(new_id)[-1].content == "answer " + CONTROLS


def test_nan_in_stored_params_never_breaks_list_json(chat: int) -> None:
    conn = sqlite3.connect(app_paths().db_path)
    conn.execute("UPDATE conversations SET params = ? WHERE id = ?",
                 ('{"context_size": NaN, "x": -Infinity, "y": 1e999, "ok": 1}', chat))
    conn.commit()
    conn.close()
    listed = strict_json(run("list", "--json").output)
    assert listed[0]["params"] == {"ok": 1}
    assert strict_json(run("show", str(chat), "--json").output)["conversation"]["params"] == \
        {"ok": 1}


def test_json_text_escapes_what_json_dumps_leaves_raw() -> None:
    text = json_text({"k": "\x1b\x7f\x9b\ud800é\n", "n": float("nan")})
    assert text == '{\n  "k": "\\u001b\\u007f\\u009b\\ud800é\\n",\n  "n": null\n}'


# ---- fuzzing the importer --------------------------------------------------------------------

_ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=8)
# Integers past a float's range too (10**400): comparing them with floats is fine, math.isfinite
# is not.
_HUGE = st.one_of(st.integers(min_value=2**1023, max_value=10**400),
                  st.integers(min_value=-(10**400), max_value=-(2**1023)))
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     _HUGE,
                     st.floats(allow_nan=True, allow_infinity=True), _ANY_TEXT,
                     st.sampled_from(["user", "assistant", "system", "stop", "incomplete",
                                      EXPORT_FORMAT, "localr1-conversations"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_ANY_TEXT, inner, max_size=4)), max_leaves=12)
_FIELDS = ["title", "model", "system_prompt", "params", "created_at", "updated_at", "pinned",
           "archived", "active_leaf_id", "id", "message_count", "temperature", "bogus"]
_MESSAGE_FIELDS = ["id", "parent_id", "role", "content", "reasoning", "thinking_seconds",
                   "model", "finish_reason", "prompt_tokens", "ttft_ms", "created_at",
                   "batch_id", "conversation_id", "bogus"]


@st.composite
def _exports(draw) -> object:
    """Mostly well-formed exports with a few fields swapped for anything at all."""
    params = st.dictionaries(st.sampled_from(["temperature", "top_p", "seed", "top_k", "x"]),
                             st.one_of(_HUGE, _SCALARS), max_size=3)
    conversation = {"title": "t", "params": draw(st.one_of(st.just({"temperature": 0.5}),
                                                           params))}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        conversation[draw(st.sampled_from(_FIELDS))] = draw(st.one_of(_SCALARS, _JSON, params))
    messages = []
    for n in range(draw(st.integers(0, 4))):
        message = {"id": n + 1, "parent_id": n or None, "role": "user", "content": "hi"}
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            message[draw(st.sampled_from(_MESSAGE_FIELDS))] = draw(st.one_of(_SCALARS, _JSON))
        messages.append(message)
    export = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
              "conversation": conversation, "messages": messages}
    return draw(st.sampled_from([export, [export, export], {
        "format": "localr1-conversations", "version": 1, "conversations": [export]}]))


def test_fuzzed_imports_either_import_or_fail_cleanly_leaving_the_db_unchanged(
        tmp_path: Path) -> None:
    with Store.open(tmp_path / "fuzz.db") as store:
        def counts() -> tuple:
            return tuple(store._rows(sql)[0]["n"] for sql in (
                "SELECT count(*) AS n FROM conversations", "SELECT count(*) AS n FROM messages"))

        @settings(max_examples=200, deadline=None, database=None)
        @given(data=st.one_of(_exports(), _JSON))
        def check(data: object) -> None:
            before = counts()
            try:
                ids = store.import_conversations(data)
            except LocalR1Error:
                assert counts() == before
                return
            assert counts()[0] == before[0] + len(ids)
            for new_id in ids:  # what got in prints as valid, escaped JSON again
                text = json_text(store.export_conversation(new_id))
                _assert_no_raw_controls(text)
                strict_json(text)
                store.conversation_markdown(new_id, include_reasoning=True)

        check()
