"""Before a pull: what the name resolves to on the Hub and whether it fits this machine.

`localr1 pull`, the TUI's pull panel and its welcome screen all show these facts; they lay
them out differently but compute them here once. The speed is only shown here, so a bad
LOCALR1_MEMORY_BANDWIDTH costs the estimate (and a warning), never the pull.
"""

from __future__ import annotations

from dataclasses import dataclass

from localr1.models import fit
from localr1.models.bandwidth import BandwidthSettingError
from localr1.models.catalog import Catalog, load_catalog
from localr1.models.hub_resolve import PullPlan, resolve_pull
from localr1.sizes import format_bytes


@dataclass(frozen=True)
class PlannedPull:
    plan: PullPlan
    fit: fit.Fit
    warning: str | None = None  # e.g. a bad speed setting, ignored for this pull

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def repo(self) -> str:
        return self.plan.repo

    @property
    def size_text(self) -> str:
        """"4.7 GB", or "75.0 GB, 2 parts" for a split GGUF."""
        parts = f", {len(self.plan.files)} parts" if len(self.plan.files) > 1 else ""
        return f"{format_bytes(self.plan.size_bytes)}{parts}"

    @property
    def fit_text(self) -> str:
        return fit.fit_text(self.fit)

    @property
    def too_large_question(self) -> str | None:
        """What to ask before downloading a model that will not run here; None if it will."""
        if self.fit.runs:
            return None
        return (f"{self.name} needs about {format_bytes(self.fit.needed_bytes)} of memory; "
                "download anyway?")


def plan_pull(name: str, catalog: Catalog | None = None,
              machine: fit.MachineMemory | None = None) -> PlannedPull:
    """Resolve `name` on the Hub (one request) and estimate its fit here."""
    plan = resolve_pull(name, catalog or load_catalog())
    warning = None
    if machine is None:
        try:
            machine = fit.machine_memory()
        except BandwidthSettingError as exc:
            warning = f"{exc}; ignored for this pull (no speed estimate)"
            machine = fit.machine_memory(with_cpu_bandwidth=False)
    return PlannedPull(plan, fit.plan_fit(plan, machine), warning)
