"""Where a growing Markdown text can be cut into independent pieces, and its code blocks.

Streaming a long reply into one Markdown widget gets slower as it grows, so the message view
freezes finished blocks into their own widgets and streams only the tail. A cut is safe at the
start of a non-indented line that follows a blank line outside any fenced code block and does
not start a list item (a loose list cut in two would number and space its items differently):
the text on each side then parses to the blocks it gives as part of the whole.
`cuts_are_block_boundaries` checks that against one parse of the whole text at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_LIST_ITEM = re.compile(r"(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")


@dataclass(frozen=True)
class CodeBlock:
    language: str
    code: str

    @property
    def summary(self) -> str:
        lines = self.code.count("\n") + (0 if self.code.endswith("\n") else 1)
        return f"{self.language or 'code'}, {lines} line{'s' if lines != 1 else ''}"


def find_split_point(text: str, min_chars: int, not_before: int = 0) -> int | None:
    """The offset of the last safe cut in `text` at or after both `min_chars` and `not_before`.

    None when there is none yet. A cut needs the first character of the next block, so a
    text that ends in a blank line is not cut until more arrives.
    """
    best: int | None = None
    fence: str | None = None  # the opening fence while inside a fenced block
    previous_blank = False
    offset = 0
    for line in text.splitlines(keepends=True):
        complete = line.endswith("\n")
        stripped = line.strip()
        if fence is None and previous_blank and stripped and not line[0].isspace() \
                and not _LIST_ITEM.match(line) and offset >= min_chars \
                and offset >= not_before:
            best = offset
        match = _FENCE.match(line)
        if fence is None:
            if match and complete and not (match[1][0] == "`" and "`" in match[2]):
                fence = match[1]
        elif match and complete and match[1][0] == fence[0] and len(match[1]) >= len(fence) \
                and not match[2].strip():
            fence = None
        previous_blank = complete and not stripped
        offset += len(line)
    return best


def cuts_are_block_boundaries(markdown: str, cuts: list[int]) -> bool:
    """True when every cut (an offset into `markdown`) falls between top-level blocks of the
    whole text, parsed once: no list, quote, table or code block spans a cut, so the pieces
    render exactly as the whole does."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("gfm-like").parse(markdown)
    spans = [token.map for token in tokens if token.level == 0 and token.map
             and token.nesting >= 0]
    for cut in cuts:
        line = markdown.count("\n", 0, cut)
        if not any(start == line for start, _end in spans):
            return False
        if any(start < line < end for start, end in spans):
            return False
    return True


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced (and indented) code blocks of a Markdown text, in order."""
    from markdown_it import MarkdownIt  # Textual's own parser; imported only when needed

    tokens = MarkdownIt("gfm-like").parse(markdown)
    return [CodeBlock(token.info.strip().split(" ")[0] if token.info else "", token.content)
            for token in tokens if token.type in ("fence", "code_block")]
