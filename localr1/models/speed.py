"""How fast a model will decode here, estimated before it is loaded (or downloaded).

Decoding one token of a dense model reads every weight once, so memory bandwidth bounds the
speed: tokens/s ~= DECODE_EFFICIENCY x bandwidth / bytes read per token, the bytes being the
weights (about the file size; the KV cache read per token is small at chat lengths and left
out). Split between GPU and CPU, each part takes its share of the time. The bandwidths come
from `bandwidth.py`; where one is unknown, so is the speed (except that `fit.py` bounds a split
over a GPU of unknown bandwidth by its CPU-held part alone).

DECODE_EFFICIENCY is calibrated by `bench/speed_estimate.py`: SmolLM2-135M Q4_1 (98 MB) on
2 CPU threads decoded at ~0.6 of the measured memcpy bandwidth over its size.

USABLE_TOKENS_PER_SECOND is the speed below which a model is not recommended: an R1 distill
thinks for some 500 to 2,000 tokens before it answers, and at 8 tokens/s a 1,000-token think
block already takes two minutes; slower than that, each question is a long wait.
"""

from __future__ import annotations

DECODE_EFFICIENCY = 0.6
USABLE_TOKENS_PER_SECOND = 8.0


def decode_tokens_per_second(bytes_per_token: int, bandwidth: float) -> float:
    """Estimated decode speed of a model reading `bytes_per_token` at `bandwidth` bytes/s."""
    return DECODE_EFFICIENCY * bandwidth / max(bytes_per_token, 1)


def split_tokens_per_second(bytes_per_token: int, gpu_share: float, gpu_bandwidth: float,
                            cpu_bandwidth: float) -> float:
    """The speed when `gpu_share` (0..1) of the weights sit on the GPU and the rest on the
    CPU: the two parts are read one after the other, so their times add up."""
    on_gpu = bytes_per_token * gpu_share
    seconds = on_gpu / gpu_bandwidth + (bytes_per_token - on_gpu) / cpu_bandwidth
    return DECODE_EFFICIENCY / max(seconds, 1e-12)


def is_usable(tokens_per_second: float | None) -> bool:
    """Fast enough to recommend; an unknown speed does not count against a model."""
    return tokens_per_second is None or tokens_per_second >= USABLE_TOKENS_PER_SECOND


def speed_text(tokens_per_second: float | None) -> str:
    """"~12 tok/s", "~2.4 tok/s", or "speed unknown"."""
    if tokens_per_second is None:
        return "speed unknown"
    if tokens_per_second >= 10:
        return f"~{tokens_per_second:,.0f} tok/s"
    return f"~{tokens_per_second:.1f} tok/s"
