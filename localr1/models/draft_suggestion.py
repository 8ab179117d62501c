"""Which draft model would speed up an installed model: R1-Distill-Qwen-1.5B (`r1:1.5b`) for
the larger Qwen distills (r1:7b, r1:14b, r1:32b), as LM Studio pairs them.

They share Qwen's vocabulary (151,936 and 152,064 tokens: within the 128 tokens llama.cpp's
speculative decoding tolerates); the Llama distills have another one, so nothing is suggested
for them. The catalog says which model is which: a Qwen distill is a catalog model of the draft's
architecture whose title starts like the draft's. A model is matched to the catalog by the
entry it was pulled as, or by its Hub repo. Nothing is suggested once config.toml names a draft.
"""

from __future__ import annotations

from dataclasses import dataclass

from localr1.models.catalog import Catalog, CatalogModel
from localr1.models.decode_options import is_no_draft
from localr1.models.registry import InstalledModel

DRAFT_MODEL = "r1:1.5b"
QWEN_DISTILL_TITLE = "DeepSeek-R1-Distill-Qwen-"


@dataclass(frozen=True)
class DraftSuggestion:
    draft: str  # the name to pass as the draft: "r1:1.5b", or the installed quant's name
    installed: bool  # the draft is installed already

    @property
    def cli_text(self) -> str:
        """For `localr1 pull`: what to run next."""
        pull = "" if self.installed else f"localr1 pull {DRAFT_MODEL}, then "
        return f"tip: speed it up with a draft model: {pull}--draft {self.draft}"

    @property
    def tui_text(self) -> str:
        """For the model manager, in the app's terms (the Available list, config.toml)."""
        use = f'draft_model = "{self.draft}" in config.toml'
        if self.installed:
            return f"tip: {self.draft} can draft for this model and speed it up: {use}"
        return f"tip: a draft model speeds this one up: pull {DRAFT_MODEL} (below), then {use}"


def suggest_draft(model: InstalledModel, catalog: Catalog, installed: list[InstalledModel],
                  configured_draft: str | None = None) -> DraftSuggestion | None:
    """The draft to suggest for `model`, or None (not a Qwen distill larger than the draft, the
    draft is not in the catalog, or config.toml's `configured_draft` is set)."""
    if not is_no_draft(configured_draft):
        return None
    draft_entry = catalog.find(DRAFT_MODEL)
    target = _catalog_model(model, catalog)
    if draft_entry is None or target is None:
        return None
    draft = draft_entry.model
    if target.name == draft.name or target.architecture != draft.architecture or \
            not (target.title.startswith(QWEN_DISTILL_TITLE) and
                 draft.title.startswith(QWEN_DISTILL_TITLE)):
        return None
    drafts = [m for m in installed
              if (found := _catalog_model(m, catalog)) is not None and found.name == draft.name]
    if not drafts:
        return DraftSuggestion(DRAFT_MODEL, installed=False)
    # The default quant goes by the short name; another quant by its own.
    if any(m.catalog_name == draft_entry.name for m in drafts):
        return DraftSuggestion(DRAFT_MODEL, installed=True)
    return DraftSuggestion(drafts[0].name, installed=True)


def _catalog_model(model: InstalledModel, catalog: Catalog) -> CatalogModel | None:
    """The catalog model `model` is a quant of: by the entry it was pulled as, or its repo."""
    if model.catalog_name:
        entry = catalog.find(model.catalog_name)
        if entry is not None:
            return entry.model
    if model.repo:
        return next((m for m in catalog.models if m.repo.lower() == model.repo.lower()), None)
    return None
