from localr1.terminal_text import visible_controls


def test_escape_sequences_become_visible():
    assert visible_controls("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert visible_controls("a\x9b2Jb") == "a\\x9b2Jb"  # C1 CSI
    assert visible_controls("osc\x1b]52;c;aGk=\x07") == "osc\\x1b]52;c;aGk=\\x07"
    assert visible_controls("over\rwrite") == "over\\x0dwrite"


def test_ordinary_text_untouched():
    text = "line one\n\tindented — ünïcode 答 [bold]not markup[/bold]"
    assert visible_controls(text) == text
