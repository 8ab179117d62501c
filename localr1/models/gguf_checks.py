"""Hyperparameters llama.cpp asserts on: caught here so a bad file is one line, not SIGABRT.

llama.cpp checks some metadata with ``GGML_ASSERT`` (``llama_model_base::load_hparams`` in
vendor/llama.cpp/src/llama-model.cpp) or trips over it later in a graph assert or an int32
overflow; any of those kills the process with no message. For the architectures localr1 targets
we check the same values first. Missing keys and wrong value types are left to llama.cpp, which
reports them as ordinary load errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LLAMA_MAX_LAYERS = 512  # llama-hparams.h
LLAMA_MAX_EXPERTS = 1024  # llama-hparams.h
MAX_CONTEXT_LENGTH = (1 << 31) - 1  # llama-cpp-python reads n_ctx_train back as an int32
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama-model.cpp
NO_VOCABULARY = ("none", "no_vocab")  # llama-vocab.cpp: LLAMA_VOCAB_TYPE_NONE

CHECKED_ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3", "phi3", "gemma", "gemma2",
                                   "gemma3", "gemma3n"})

# The graph builders assert key and value heads of one size (src/models/<arch>.cpp), and for
# some, rotary embeddings over the whole head.
SAME_HEAD_SIZES = frozenset({"llama", "qwen2", "qwen3", "phi3"})
FULL_ROPE = frozenset({"llama", "qwen2", "qwen3"})


class HyperparameterError(ValueError):
    """A metadata value llama.cpp would abort on; the message names the key."""


def check_hyperparameters(metadata: Mapping[str, Any]) -> None:
    """Raise HyperparameterError for a value of a checked architecture llama.cpp aborts on."""
    tokenizer = metadata.get("tokenizer.ggml.model")
    if tokenizer in NO_VOCABULARY:
        # llama.cpp loads such a file, then aborts on the first tokenize.
        raise HyperparameterError(f"tokenizer.ggml.model is {tokenizer!r}: the model has no "
                                  "vocabulary, so it cannot chat")
    arch = metadata.get("general.architecture")
    if arch not in CHECKED_ARCHITECTURES:
        return
    values = _ArchValues(metadata, arch)

    layers = values.number("block_count")
    if layers is not None:
        values.require(1 <= layers <= LLAMA_MAX_LAYERS, "block_count", layers,
                       f"llama.cpp needs 1 to {LLAMA_MAX_LAYERS} layers")
        nextn = values.number("nextn_predict_layers")
        if nextn is not None:
            values.require(nextn <= layers, "nextn_predict_layers", nextn,
                           f"more than block_count {layers}")

    context = values.number("context_length")
    if context is not None:
        values.require(1 <= context <= MAX_CONTEXT_LENGTH, "context_length", context,
                       f"must be 1 to {MAX_CONTEXT_LENGTH:,}")

    embd = values.number("embedding_length")
    if embd is not None:
        values.require(embd > 0, "embedding_length", embd, "must be positive")
    _check_heads(values, embd)
    _check_experts(values)

    rope = metadata.get(f"{arch}.rope.scaling.type")
    if isinstance(rope, str):
        values.require(rope in ROPE_SCALING_TYPES, "rope.scaling.type", rope,
                       f"llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}")


def _check_heads(values: _ArchValues, embd: int | None) -> None:
    heads = values.per_layer("attention.head_count")
    for n in heads:
        values.require(n > 0, "attention.head_count", n, "must be positive")
    kv_heads = values.per_layer("attention.head_count_kv")
    for n in kv_heads:
        values.require(n > 0, "attention.head_count_kv", n, "must be positive")
    for n, kv in zip(heads, kv_heads, strict=False):
        # Grouped-query attention broadcasts each KV head over n / kv query heads.
        values.require(n % kv == 0, "attention.head_count_kv", kv,
                       f"does not divide attention.head_count {n}")
    sizes = []
    for key in ("attention.key_length", "attention.value_length"):
        length = values.number(key)
        if length is not None:
            values.require(length > 0, key, length, "must be positive")
        elif embd and heads:
            # Without an explicit head size, llama.cpp uses embedding_length / head_count.
            values.require(embd % heads[0] == 0, "attention.head_count", heads[0],
                           f"does not divide embedding_length {embd}")
            length = embd // heads[0]
        sizes.append(length)
    key_size, value_size = sizes
    if values.arch in SAME_HEAD_SIZES and None not in sizes:
        values.require(key_size == value_size, "attention.value_length", value_size,
                       f"differs from the key head size {key_size}")
    rope = values.number("rope.dimension_count")
    if values.arch in FULL_ROPE and rope is not None and key_size is not None:
        values.require(rope == key_size, "rope.dimension_count", rope,
                       f"differs from the head size {key_size}")


def _check_experts(values: _ArchValues) -> None:
    experts = values.number("expert_count") or 0
    used = max(values.per_layer("expert_used_count"), default=0)
    values.require(experts <= LLAMA_MAX_EXPERTS, "expert_count", experts,
                   f"llama.cpp supports at most {LLAMA_MAX_EXPERTS}")
    values.require(used <= experts, "expert_used_count", used,
                   f"more than expert_count {experts}")
    if experts:
        values.require(used > 0, "expert_used_count", used, "must be positive with experts")
    groups = values.number("expert_group_count") or 0
    values.require(groups == 0 or groups < experts, "expert_group_count", groups,
                   f"must be less than expert_count {experts}")
    if groups > 1:
        values.require(experts % groups == 0, "expert_group_count", groups,
                       f"does not divide expert_count {experts}")
        group_used = values.number("expert_group_used_count") or 0
        values.require(0 < group_used < groups, "expert_group_used_count", group_used,
                       f"must be 1 to {groups - 1}")


class _ArchValues:
    """Integer metadata under the architecture's prefix, e.g. ``qwen2.block_count``."""

    def __init__(self, metadata: Mapping[str, Any], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def number(self, suffix: str) -> int | None:
        value = self.metadata.get(f"{self.arch}.{suffix}")
        return value if _is_int(value) else None

    def per_layer(self, suffix: str) -> list[int]:
        """A value given once or per layer (llama.cpp's get_key_or_arr), as a list."""
        value = self.metadata.get(f"{self.arch}.{suffix}")
        if _is_int(value):
            return [value]
        if isinstance(value, list):
            return [v for v in value if _is_int(v)]
        return []

    def require(self, ok: bool, suffix: str, value: object, why: str) -> None:
        if not ok:
            raise HyperparameterError(f"{self.arch}.{suffix} is {value!r} ({why})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
