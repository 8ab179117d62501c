"""What a model split over RPC workers asks of each side: one answer (`plan_split_memory`) for
the fit labels (models/fit.py) and the load's memory check (loading.check_split_memory), so a
label never says "fits" where the load refuses, or the reverse.

A draft model never goes to the workers: with --rpc it is loaded with no device at all
(drafters.DraftModel, `cpu_only`), so its weights, KV cache and compute buffers all stay on this
machine's CPU (llama.cpp gives a model with no devices nothing but CPU buffers). llama.cpp
splits the model's layers by the `tensor_split` we pass (rpc_split), never by the memory the
draft leaves: so the split must be given what is left here once the draft and the model's
compute buffers are set aside, or the share it puts here does not fit beside them.

This machine then holds its layers' share of the model's weights and KV cache, the whole draft
and the compute buffers; each device its layers (a repeating layer's weights and KV cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from localr1.engine.rpc_split import LayerSplit, SplitDevice, plan_split
from localr1.models.hardware import MemoryEstimate


@dataclass(frozen=True)
class SplitMemory:
    """A split, and the bytes it puts on this machine and on each device."""

    split: LayerSplit
    local_bytes: int  # its layers' share + the whole draft + the compute buffers
    local_free: int  # this machine's available RAM
    device_bytes: tuple[int, ...]  # per device, in the split's order

    @property
    def fits_here(self) -> bool:
        return self.local_bytes <= self.local_free

    def overfull_devices(self) -> Iterator[tuple[str, int, int, int]]:
        """(label, layers, bytes, free) of each device given more than its free memory."""
        for (label, layers), needed, free in zip(self.split.device_layers, self.device_bytes,
                                                 self.split.device_free, strict=True):
            if needed > free:
                yield label, layers, needed, free

    @property
    def fits(self) -> bool:
        return self.fits_here and not any(self.overfull_devices())


def this_machine_bytes(model: MemoryEstimate, on_cpu_share: float,
                       draft: MemoryEstimate | None = None, draft_share: float = 1.0) -> int:
    """What this machine holds with `on_cpu_share` of the model's layers here and
    `draft_share` of the draft's (1: all of it); both compute buffers are here in full."""
    layered = (model.weights_bytes + model.kv_cache_bytes) * on_cpu_share
    if draft is not None:
        layered += (draft.weights_bytes + draft.kv_cache_bytes) * draft_share
    return int(layered) + model.overhead_bytes + (draft.overhead_bytes if draft else 0)


def device_bytes(model: MemoryEstimate, split: LayerSplit) -> tuple[int, ...]:
    """What each device of `split` holds: its layers."""
    per_layer = model.per_layer_bytes()
    return tuple(layers * per_layer for _, layers in split.device_layers)


def plan_split_memory(model: MemoryEstimate, requested: int | str, local_free: int,
                      devices: Sequence[SplitDevice],
                      draft: MemoryEstimate | None = None) -> SplitMemory:
    """The split of `model`'s layers between this machine (`local_free` bytes of RAM) and
    `devices` for `requested` gpu_layers ("auto", -1 or N; see rpc_split.plan_split), with
    `draft` kept wholly here, and what each side must hold."""
    set_aside = model.overhead_bytes + (draft.total_bytes if draft else 0)
    split = plan_split(model.n_layers, requested, max(local_free - set_aside, 0), devices)
    return SplitMemory(split, this_machine_bytes(model, split.cpu_layers / split.total, draft),
                       local_free, device_bytes(model, split))
