"""Which device holds which layers when a model is split over RPC workers, computed the way
llama.cpp assigns them (src/llama-model.cpp, load_tensors), so we can say where they went.

llama.cpp's devices are the RPC workers' first (in the order they were registered), then local
GPUs; the CPU is not one of them. With n_gpu_layers N of n_layer + 1 (the output layer counts),
layers below i_gpu_start = n_layer + 1 - N stay on the CPU and the rest go to the devices by
the cumulative split points of `tensor_split` (float32 arithmetic, std::upper_bound). We pass
the workers' free memory as tensor_split ourselves, so the split does not move if a worker's
free memory changes between our query and llama.cpp's.

This machine's available RAM counts as one share beside the devices' free memory: with
`gpu_layers = "auto"`, the CPU keeps the layers in proportion to it.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitDevice:
    """One of llama.cpp's offload devices, as named in `placement`."""

    label: str  # "RPC 127.0.0.1:50052", "CUDA"
    free_bytes: int


@dataclass(frozen=True)
class LayerSplit:
    """Layers per device, the output layer counted like llama.cpp ("offloaded N/M layers")."""

    cpu_layers: int
    device_layers: tuple[tuple[str, int], ...]  # (label, layers), llama.cpp's device order
    tensor_split: tuple[float, ...]  # what Llama(tensor_split=...) gets
    device_free: tuple[int, ...]  # each device's free memory, for the memory check

    @property
    def offloaded(self) -> int:
        return sum(layers for _, layers in self.device_layers)

    @property
    def total(self) -> int:
        return self.cpu_layers + self.offloaded

    @property
    def placement(self) -> str:
        """`CPU 10 layers · RPC 127.0.0.1:50052 11 layers · RPC 127.0.0.1:50053 10 layers`."""
        parts = [("CPU", self.cpu_layers), *self.device_layers]
        return " · ".join(f"{label} {layers} layer{'' if layers == 1 else 's'}"
                          for label, layers in parts)


def _f32(value: float) -> float:
    """`value` rounded to a C float (one float32 operation on float32 inputs, done in double
    and rounded once, gives exactly the float32 result)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def layer_devices(n_layer: int, n_gpu_layers: int, weights: Sequence[float]) -> list[int]:
    """The device index of each layer 0..n_layer (the last is the output layer), -1 for the
    CPU: llama.cpp's get_layer_buft_list with `weights` as tensor_split."""
    split_sum = 0.0
    splits = []
    for weight in weights:
        split_sum = _f32(split_sum + _f32(weight))
        splits.append(split_sum)
    splits = [_f32(point / split_sum) for point in splits] if split_sum else splits
    i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)
    act_gpu_layers = min(n_gpu_layers, n_layer + 1) if weights else 0
    devices = []
    for il in range(n_layer + 1):
        if il < i_gpu_start or il - i_gpu_start >= act_gpu_layers:
            devices.append(-1)
            continue
        position = _f32(_f32(float(il - i_gpu_start)) / _f32(float(act_gpu_layers)))
        devices.append(bisect.bisect_right(splits, position))
    return devices


def auto_offloaded_layers(n_layer: int, local_free: int, devices: Sequence[SplitDevice]) -> int:
    """Layers (of n_layer + 1) the devices get when this machine's free RAM is one share."""
    device_free = sum(max(device.free_bytes, 0) for device in devices)
    total_free = device_free + max(local_free, 0)
    if not devices or total_free <= 0:
        return 0
    return (n_layer + 1) - round((n_layer + 1) * max(local_free, 0) / total_free)


def plan_split(n_layer: int, requested: int | str, local_free: int,
               devices: Sequence[SplitDevice]) -> LayerSplit:
    """The split for `requested` gpu_layers: "auto" (by free memory, see above), -1 (all
    layers to the devices) or N layers to the devices."""
    if requested == "auto":
        offloaded = auto_offloaded_layers(n_layer, local_free, devices)
    elif requested == -1:
        offloaded = n_layer + 1
    else:
        offloaded = min(int(requested), n_layer + 1)
    weights = tuple(float(max(device.free_bytes, 1)) for device in devices)
    assigned = layer_devices(n_layer, offloaded, weights)
    return LayerSplit(
        cpu_layers=assigned.count(-1),
        device_layers=tuple((device.label, assigned.count(index))
                            for index, device in enumerate(devices)),
        tensor_split=weights,
        device_free=tuple(device.free_bytes for device in devices),
    )
