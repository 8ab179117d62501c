"""How a model decodes, as the user chose it: the draft model and the KV cache options in words.

The draft model for speculative decoding comes from what the user typed (`--draft`, config.toml's
`draft_model`, a conversation's F4 setting): a model name or GGUF path, resolved by the same rule
as `--model` (`library.resolve_model`), `lookup` (drafts from n-grams of the prompt and the text
so far, no second model) or `none` (no draft: turns a configured one off for one run or one
conversation). `lookup` and `none` are words, not model names: they win over a model so named.
"""

from __future__ import annotations

from pathlib import Path

from localr1.errors import LocalR1Error, ModelFileError

LOOKUP = "lookup"
NO_DRAFT = "none"


def is_no_draft(reference: str | None) -> bool:
    """Whether `reference` asks for no draft: unset, blank or `none`."""
    return reference is None or reference.strip().lower() in ("", NO_DRAFT)


def resolve_draft(reference: str | None, models_dir: Path) -> Path | str | None:
    """EngineConfig.draft for `reference`: the draft GGUF's path, "lookup", or None. A draft
    that cannot be found is a ModelFileError naming it as the draft (and `localr1 pull` for a
    catalog name that is not installed)."""
    if is_no_draft(reference):
        return None
    assert reference is not None
    if reference.strip().lower() == LOOKUP:
        return LOOKUP
    from localr1.models.library import resolve_model

    try:
        return resolve_model(reference, models_dir)
    except LocalR1Error as exc:
        raise ModelFileError(_as_draft(str(exc))) from None


def draft_name(draft: Path | str | None, models_dir: Path) -> str | None:
    """EngineConfig.draft as the user knows it: "lookup", or the draft model's library name
    (its file name when it has none; never its path), as the history names models."""
    if draft is None or isinstance(draft, str):
        return draft
    from localr1.models.choice import name_model

    return name_model(draft, models_dir).name


def _as_draft(message: str) -> str:
    # "model 'r1:1.5b' is not installed; ..." reads best as "draft model 'r1:1.5b' is ...".
    if message.startswith("model '"):
        return f"draft {message}"
    return f"draft model: {message}"


def kv_cache_facts(flash_attn: str, kv_type: str) -> list[str]:
    """The KV cache options that are not the defaults, in words ("KV q8_0", "flash attention
    on"), for `show` and the chat header."""
    facts = [f"KV {kv_type}"] if kv_type != "f16" else []
    if flash_attn != "auto":
        facts.append(f"flash attention {flash_attn}")
    return facts
