"""Can this draft model draft for that model? llama.cpp's vocabulary rules, one-line answers.

A draft model proposes token ids that the target model verifies, so both must give every id the
same meaning. The rules are llama.cpp's (``common_speculative_are_compatible`` in
``common/speculative.cpp``): the same vocabulary type, sizes within
``SPEC_VOCAB_MAX_SIZE_DIFFERENCE`` tokens, the same start/end tokens, and the same text for every
token from ``SPEC_VOCAB_CHECK_START_TOKEN_ID`` up to the smaller size. Two departures: the size is
checked before the start/end tokens, so that a draft of another family is told "vocabularies
differ in size" rather than a detail of its special tokens; and the start and end ids must
match even when the model does not add them to prompts (llama.cpp's earlier rule, which the
vendored one relaxed to ids that are added): a draft with another end token would end its turns
with a token that the model reads as text, and never draft the model's own end.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from localr1.errors import DraftModelError

if TYPE_CHECKING:  # llama_cpp is imported when a check runs (loading it costs a shared library)
    import llama_cpp

__all__ = [
    "SPEC_VOCAB_CHECK_START_TOKEN_ID",
    "SPEC_VOCAB_MAX_SIZE_DIFFERENCE",
    "check_draft_compatible",
]

SPEC_VOCAB_MAX_SIZE_DIFFERENCE = 128
SPEC_VOCAB_CHECK_START_TOKEN_ID = 5

# Token texts are fetched this many at a time, so that a difference early on stops the check.
_TEXT_CHUNK = 16384
# A token text longer than this is cut in the error message.
_SHOWN_TEXT_CHARS = 40

# llama.h's enum llama_vocab_type.
_VOCAB_TYPE_NAMES = {
    0: "no vocabulary",
    1: "SentencePiece (SPM)",
    2: "byte-level BPE",
    3: "WordPiece (WPM)",
    4: "Unigram (UGM)",
    5: "RWKV",
    6: "PLaMo-2",
}


@functools.cache
def _get_text() -> Callable[..., bytes | None]:
    """llama_vocab_get_text through a prototype without argtypes: llama-cpp-python's binding
    converts both arguments on every call, which made comparing two 152k-token vocabularies
    cost ~115 ms on a busy 2-core machine; with the pointer converted once it is ~75 ms."""
    import llama_cpp

    address = ctypes.cast(llama_cpp.llama_vocab_get_text, ctypes.c_void_p).value
    return ctypes.CFUNCTYPE(ctypes.c_char_p)(address)


def check_draft_compatible(target_model: llama_cpp.llama_model_p,
                           draft_model: llama_cpp.llama_model_p,
                           target_name: str, draft_name: str) -> None:
    """Raise :class:`DraftModelError` unless ``draft_model`` can draft for ``target_model``
    (llama.cpp model pointers, e.g. ``Llama(...).model``); the names are what the message
    calls them."""
    import llama_cpp

    target = llama_cpp.llama_model_get_vocab(target_model)
    draft = llama_cpp.llama_model_get_vocab(draft_model)
    reason = _difference(target, draft, target_name, draft_name)
    if reason is not None:
        raise DraftModelError(f"{draft_name} cannot draft for {target_name}: {reason}")


def _difference(target, draft, target_name: str, draft_name: str) -> str | None:
    """What makes ``draft`` unfit to draft for ``target``, in words; None when nothing does.
    Figures are given draft first, like the sentence they end."""
    import llama_cpp

    target_type, draft_type = llama_cpp.llama_vocab_type(target), llama_cpp.llama_vocab_type(draft)
    if target_type != draft_type:
        return (f"vocabulary types differ ({_vocab_type_name(draft_type)} vs "
                f"{_vocab_type_name(target_type)})")

    n_target = llama_cpp.llama_vocab_n_tokens(target)
    n_draft = llama_cpp.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > SPEC_VOCAB_MAX_SIZE_DIFFERENCE:
        return (f"vocabularies differ in size ({n_draft} vs {n_target} tokens; llama.cpp allows "
                f"{SPEC_VOCAB_MAX_SIZE_DIFFERENCE})")

    for what, get_add, get_id in (
        ("start", llama_cpp.llama_vocab_get_add_bos, llama_cpp.llama_vocab_bos),
        ("end", llama_cpp.llama_vocab_get_add_eos, llama_cpp.llama_vocab_eos),
    ):
        adds_target, adds_draft = bool(get_add(target)), bool(get_add(draft))
        if adds_target != adds_draft:
            adder, other = (target_name, draft_name) if adds_target else (draft_name, target_name)
            return f"{adder} adds a {what} token to prompts and {other} does not"
        if get_id(target) != get_id(draft):
            return f"{what} token differs ({get_id(draft)} vs {get_id(target)})"

    token = _first_different_text(target, draft, min(n_target, n_draft))
    if token is not None:
        return (f"token {token} is {_shown_text(draft, token)} in {draft_name} but "
                f"{_shown_text(target, token)} in {target_name}")
    return None


def _first_different_text(target, draft, n_tokens: int) -> int | None:
    """The first token id from SPEC_VOCAB_CHECK_START_TOKEN_ID whose text differs; None if
    none below ``n_tokens`` does."""
    get_text = _get_text()
    target_ptr = ctypes.c_void_p(ctypes.cast(target, ctypes.c_void_p).value)
    draft_ptr = ctypes.c_void_p(ctypes.cast(draft, ctypes.c_void_p).value)
    for start in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, n_tokens, _TEXT_CHUNK):
        ids = range(start, min(start + _TEXT_CHUNK, n_tokens))
        target_texts = list(map(get_text, itertools.repeat(target_ptr, len(ids)), ids))
        draft_texts = list(map(get_text, itertools.repeat(draft_ptr, len(ids)), ids))
        if target_texts != draft_texts:
            return next(token for token, a, b in zip(ids, target_texts, draft_texts, strict=True)
                        if a != b)
    return None


def _shown_text(vocab, token: int) -> str:
    """A token's vocabulary text quoted on one line: controls escaped, long texts cut."""
    import llama_cpp

    text = (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", "replace")
    if len(text) > _SHOWN_TEXT_CHARS:
        text = text[:_SHOWN_TEXT_CHARS] + "…"
    return repr(text)


def _vocab_type_name(vocab_type: int) -> str:
    return _VOCAB_TYPE_NAMES.get(vocab_type, f"vocabulary type {vocab_type}")
