"""Draft-model compatibility: llama.cpp's vocabulary rules on real GGUFs, one-line errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.draft_compat import check_draft_compatible
from localr1.engine.events import GenerationParams, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.errors import DraftModelError, LocalR1Error
from tests.fixtures.odd_models import write_tiny_model
from tests.fixtures.scripted_models import (
    BOS_ID,
    EOS_ID,
    NEWLINE_ID,
    OTHER_BOS_ID,
    OTHER_EOS_ID,
    RENAMED_TOKEN_ID,
    RENAMED_TOKEN_TEXT,
    VARIANTS,
    build_scripted_model,
)

R1_VOCAB = 152064  # the scripted models carry R1-Distill-Qwen's full vocabulary


@pytest.fixture(scope="module")
def vocab() -> Iterator[Callable[[Path], llama_cpp.Llama]]:
    """Loads a GGUF's vocabulary only (the check reads nothing else), once per path."""
    loaded: dict[Path, llama_cpp.Llama] = {}

    def load(path: Path) -> llama_cpp.Llama:
        if path not in loaded:
            loaded[path] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        return loaded[path]

    yield load
    for llm in loaded.values():
        llm.close()


@pytest.fixture(scope="module")
def variant_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Builds a scripted variant's GGUF, once per variant."""
    built: dict[str, Path] = {}

    def build(variant: str) -> Path:
        if variant not in built:
            path = tmp_path_factory.mktemp(variant) / f"{variant}.gguf"
            built[variant] = build_scripted_model(path, variant)
        return built[variant]

    return build


def _refusal(target: llama_cpp.Llama, draft: llama_cpp.Llama, target_name: str = "r1:7b",
             draft_name: str = "r1:1.5b") -> str:
    with pytest.raises(DraftModelError) as caught:
        check_draft_compatible(target.model, draft.model, target_name, draft_name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{draft_name} cannot draft for {target_name}: ")
    return message.removeprefix(f"{draft_name} cannot draft for {target_name}: ")


def test_a_model_can_draft_for_itself(r1_prefill_model: Path, r1_original_model: Path) -> None:
    # Fully loaded models, as the engine passes them; a second copy of the same vocabulary (here
    # with another chat template) is as good.
    target = llama_cpp.Llama(model_path=str(r1_prefill_model), n_ctx=64, verbose=False)
    draft = llama_cpp.Llama(model_path=str(r1_original_model), n_ctx=64, verbose=False)
    try:
        check_draft_compatible(target.model, target.model, "r1:7b", "r1:7b")
        check_draft_compatible(target.model, draft.model, "r1:7b", "r1:1.5b")
        check_draft_compatible(draft.model, target.model, "r1:1.5b", "r1:7b")
    finally:
        target.close()
        draft.close()


def test_another_end_token_is_refused(vocab, r1_prefill_model: Path, variant_model) -> None:
    r1, other = vocab(r1_prefill_model), vocab(variant_model("draft_other_eos"))
    assert _refusal(r1, other) == f"end token differs ({OTHER_EOS_ID} vs {EOS_ID})"
    assert _refusal(other, r1) == f"end token differs ({EOS_ID} vs {OTHER_EOS_ID})"


def test_another_start_token_is_refused(vocab, r1_prefill_model: Path, variant_model) -> None:
    r1 = vocab(r1_prefill_model)
    assert _refusal(r1, vocab(variant_model("draft_other_bos"))) == (
        f"start token differs ({OTHER_BOS_ID} vs {BOS_ID})")
    no_bos = vocab(variant_model("draft_no_bos"))
    assert _refusal(r1, no_bos) == "r1:7b adds a start token to prompts and r1:1.5b does not"
    assert _refusal(no_bos, r1, "plain", "r1:7b") == (
        "r1:7b adds a start token to prompts and plain does not")


def test_a_changed_token_text_is_named(vocab, r1_prefill_model: Path, variant_model) -> None:
    r1, renamed = vocab(r1_prefill_model), vocab(variant_model("draft_renamed_token"))
    assert _refusal(r1, renamed, "r1:7b", "my-draft") == (
        f"token {RENAMED_TOKEN_ID} is '{RENAMED_TOKEN_TEXT}' in my-draft but 'Item' in r1:7b")


def test_vocabulary_sizes_may_differ_by_128(vocab, r1_prefill_model: Path,
                                            variant_model) -> None:
    r1 = vocab(r1_prefill_model)
    wider = vocab(variant_model("draft_wider_vocab"))
    too_wide = vocab(variant_model("draft_too_wide_vocab"))
    # Like R1-Distill-Qwen-32B (152,064 tokens) and -1.5B (151,936): within llama.cpp's limit.
    check_draft_compatible(r1.model, wider.model, "r1:7b", "wider")
    check_draft_compatible(wider.model, r1.model, "wider", "r1:7b")
    assert _refusal(r1, too_wide) == (
        f"vocabularies differ in size ({R1_VOCAB + 129} vs {R1_VOCAB} tokens; "
        "llama.cpp allows 128)")


def test_another_model_family_is_refused_by_size(vocab, r1_prefill_model: Path,
                                                 smollm2_model: Path) -> None:
    r1, smollm2 = vocab(r1_prefill_model), vocab(smollm2_model)
    assert _refusal(smollm2, r1, "smollm2", "r1:1.5b") == (
        f"vocabularies differ in size ({R1_VOCAB} vs 49152 tokens; llama.cpp allows 128)")
    assert _refusal(r1, smollm2, "r1:7b", "smollm2") == (
        f"vocabularies differ in size (49152 vs {R1_VOCAB} tokens; llama.cpp allows 128)")


def test_another_vocabulary_type_is_refused(vocab, r1_prefill_model: Path,
                                            tmp_path: Path) -> None:
    spm = vocab(write_tiny_model(tmp_path / "tiny-spm.gguf"))  # a SentencePiece vocabulary
    assert _refusal(vocab(r1_prefill_model), spm, "r1:7b", "tiny") == (
        "vocabulary types differ (SentencePiece (SPM) vs byte-level BPE)")


def test_the_error_is_a_localr1_error() -> None:
    assert issubclass(DraftModelError, LocalR1Error)


@pytest.mark.parametrize("variant", [name for name in VARIANTS if name.startswith("draft_")])
def test_the_vocabulary_variants_still_follow_their_script(variant: str, variant_model) -> None:
    # So that they can serve as real drafts too: each writes the prefill output, then its own end.
    spec = VARIANTS[variant]
    llm = llama_cpp.Llama(model_path=str(variant_model(variant)), n_ctx=64, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        assert llama_cpp.llama_vocab_eos(vocab) == spec.eos_id
        generated = []
        for token in llm.generate([NEWLINE_ID], temp=0.0):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                assert token == spec.eos_id
                break
            generated.append(token)
            assert len(generated) <= len(spec.script)
        assert generated == list(spec.script)
        assert llm.detokenize(generated).decode() == spec.output
    finally:
        llm.close()


# --- in the engine: `--draft MODEL` ----------------------------------------------------------


def test_the_engine_refuses_an_incompatible_draft(r1_prefill_model: Path, variant_model) -> None:
    draft = variant_model("draft_other_eos")
    with pytest.raises(DraftModelError) as caught:
        Engine.load(EngineConfig(r1_prefill_model, context_size=256, draft=draft))
    assert str(caught.value).startswith(f"{draft.stem} cannot draft for {r1_prefill_model.stem}: ")
    assert str(caught.value).endswith(f"end token differs ({OTHER_EOS_ID} vs {EOS_ID})")


def test_a_model_drafting_for_itself_changes_nothing(r1_prefill_model: Path,
                                                     variant_model) -> None:
    def turn(draft: Path | None):
        with Engine.load(EngineConfig(r1_prefill_model, context_size=256, draft=draft)) as engine:
            events = list(engine.stream_chat([ChatMessage("user", "hi")],
                                             GenerationParams(temperature=0.0)))
            return events, engine.info

    plain, _ = turn(None)
    # The copy with 128 more tokens is as good a draft: its extra tokens are never drafted.
    for draft in (r1_prefill_model, variant_model("draft_wider_vocab")):
        drafted, info = turn(draft)
        assert info.draft is not None and info.draft != "lookup"
        assert [e for e in drafted if not isinstance(e, TurnDone)] == \
            [e for e in plain if not isinstance(e, TurnDone)]
        stats = drafted[-1].stats
        assert stats.completion_tokens == len(VARIANTS["prefill"].script)
        assert stats.draft_tokens > 0 and stats.draft_accepted == stats.draft_tokens
