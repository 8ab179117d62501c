import io
import os
import pty
import sys

from localr1.terminal_text import for_stream, is_terminal, safe_echo, safe_write, visible_controls


def test_escape_sequences_become_visible():
    assert visible_controls("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert visible_controls("a\x9b2Jb") == "a\\x9b2Jb"  # C1 CSI
    assert visible_controls("osc\x1b]52;c;aGk=\x07") == "osc\\x1b]52;c;aGk=\\x07"
    assert visible_controls("over\rwrite") == "over\\x0dwrite"


def test_ordinary_text_untouched():
    text = "line one\n\tindented — ünïcode 答 [bold]not markup[/bold]"
    assert visible_controls(text) == text


def test_terminal_gets_visible_controls_and_a_file_gets_the_bytes(tmp_path):
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", encoding="utf-8", closefd=True) as terminal, \
            open(tmp_path / "out.txt", "w", encoding="utf-8") as file:
        assert is_terminal(terminal) and not is_terminal(file)
        safe_write(terminal, "a\x1b]52;c;aGk=\x07b\x9b2J\n")
        safe_write(file, "a\x1b]52;c;aGk=\x07b\x9b2J\n")
    shown = os.read(leader, 1024)
    os.close(leader)
    assert shown == b"a\\x1b]52;c;aGk=\\x07b\\x9b2J\r\n"
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "a\x1b]52;c;aGk=\x07b\x9b2J\n"


def test_safe_echo_escapes_before_styling(monkeypatch):
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", terminal)
    safe_echo("title\x1bc", bold=True)
    terminal.close()
    shown = os.read(leader, 1024)
    os.close(leader)
    assert shown == b"\x1b[1mtitle\\x1bc\x1b[0m\r\n"  # only our own bold is live


def test_safe_echo_into_a_pipe_keeps_the_text(capsys):
    safe_echo("raw\x1b]0;title\x07\x9b", err=True)
    assert capsys.readouterr().err == "raw\x1b]0;title\x07\x9b\n"


def test_a_closed_stream_is_not_a_terminal():
    stream = io.StringIO()
    stream.close()
    assert not is_terminal(stream)
    assert for_stream("\x1b", stream) == "\x1b"
