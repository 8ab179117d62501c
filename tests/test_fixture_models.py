"""The scripted R1 test models (and SmolLM2) load and decode as the fixtures promise.

These tests drive llama-cpp-python directly, without localr1, so that a failure here points at
the fixtures (or at llama.cpp) rather than at the app.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from tests.fixtures.scripted_models import (
    ANSWER_TEXT,
    ASSISTANT_ID,
    BOS_ID,
    BOXED_RIGHT_ANSWER_TEXT,
    BOXED_RIGHT_OUTPUT_TEXT,
    BOXED_RIGHT_REASONING_TEXT,
    BOXED_WRONG_ANSWER_TEXT,
    BOXED_WRONG_OUTPUT_TEXT,
    BOXED_WRONG_REASONING_TEXT,
    EOS_ID,
    LOOP_CONTEXT_LENGTH,
    LOOP_CYCLE_TEXT,
    LOOP_CYCLE_TOKENS,
    MARKUP_ANSWER_TEXT,
    NEWLINE_ID,
    NO_BOX_ANSWER_TEXT,
    NO_BOX_OUTPUT_TEXT,
    ORIGINAL_OUTPUT_TEXT,
    PREFILL_OUTPUT_TEXT,
    PREFILL_TEMPLATE,
    REASONING_TEXT,
    THINK_CLOSE_ID,
    THINK_OPEN_ID,
    VARIANTS,
    build_scripted_model,
    check_variant,
    decode_pieces,
)

MAX_MODEL_BYTES = 60 * 1024 * 1024
MAX_BUILD_SECONDS = 5.0

FIXTURE_FOR_VARIANT = {
    "original": "r1_original_model",
    "prefill": "r1_prefill_model",
    "loop": "r1_loop_model",
    "no_template": "r1_no_template_model",
    "markup": "r1_markup_model",
    "boxed_right": "r1_boxed_right_model",
    "boxed_wrong": "r1_boxed_wrong_model",
    "no_box": "r1_no_box_model",
}
EVAL_VARIANTS = ("boxed_right", "boxed_wrong", "no_box")

GREEDY = {"temp": 0.0}
SAMPLINGS = {
    "greedy": GREEDY,
    "t1.0-topk0": {"temp": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
    "t1.5-topk0": {"temp": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
    "r1-recommended": {"temp": 0.6, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "repeat-penalty": {"temp": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.5},
}
SEEDS = (0, 1, 12345)


@pytest.fixture(scope="module")
def loaded() -> Iterator[dict[Path, llama_cpp.Llama]]:
    """Cache of loaded models for this module, keyed by path."""
    cache: dict[Path, llama_cpp.Llama] = {}
    yield cache
    for llm in cache.values():
        llm.close()


def _load(loaded: dict[Path, llama_cpp.Llama], path: Path, n_ctx: int = 512) -> llama_cpp.Llama:
    if path not in loaded:
        loaded[path] = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
    return loaded[path]


def _variant_llm(request, loaded, variant: str) -> llama_cpp.Llama:
    return _load(loaded, request.getfixturevalue(FIXTURE_FOR_VARIANT[variant]))


def _special_text(llm: llama_cpp.Llama, token: int) -> str:
    return llm.detokenize([token], special=True).decode("utf-8")


def _prompt_tokens(llm: llama_cpp.Llama, template: str | None = None) -> list[int]:
    """Render a one-message chat with the model's own template and tokenize it."""
    if template is None:
        template = llm.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=_special_text(llm, llm.token_eos()),
        bos_token=_special_text(llm, llm.token_bos()),
    )
    prompt = formatter(messages=[{"role": "user", "content": "hi"}]).prompt
    # The template already emits the BOS text: add_bos=True would give two BOS tokens.
    return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)


def _is_eog(llm: llama_cpp.Llama, token: int) -> bool:
    return token == llm.token_eos() or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)


def _generate(
    llm: llama_cpp.Llama, prompt: list[int], max_tokens: int, **sampling
) -> tuple[list[int], bool]:
    """Generate up to max_tokens; return (tokens without the EOG token, stopped_at_eog)."""
    out: list[int] = []
    stopped = False
    gen = llm.generate(prompt, **sampling)
    try:
        for token in gen:
            if _is_eog(llm, token):
                stopped = True
                break
            out.append(token)
            if len(out) >= max_tokens:
                break
    finally:
        gen.close()
    return out, stopped


def _text(llm: llama_cpp.Llama, tokens: list[int]) -> str:
    return llm.detokenize(tokens).decode("utf-8")


# --- the scripts themselves -----------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_script_is_consistent(variant: str) -> None:
    spec = VARIANTS[variant]
    check_variant(spec)
    assert decode_pieces(spec.pieces) == spec.output
    if spec.loop and spec.loop_from:  # thinks once, then repeats its answer forever
        assert spec.output.count("</think>") == 1 and EOS_ID not in spec.script
        assert spec.output.endswith(spec.answer)
    elif spec.loop:
        assert spec.answer is None
        assert THINK_CLOSE_ID not in spec.script and EOS_ID not in spec.script
    else:
        assert spec.output.endswith(spec.answer)
        assert spec.reasoning in spec.output
        assert spec.output.count("</think>") == 1


def test_expected_texts() -> None:
    think_open, think_close = "<think>\n", "</think>\n\n"
    assert think_open + REASONING_TEXT + think_close + ANSWER_TEXT == ORIGINAL_OUTPUT_TEXT
    assert REASONING_TEXT + think_close + ANSWER_TEXT == PREFILL_OUTPUT_TEXT
    assert "\x1b[31m" in MARKUP_ANSWER_TEXT
    assert "[bold]" in MARKUP_ANSWER_TEXT and "[link=file:///etc/passwd]" in MARKUP_ANSWER_TEXT
    assert VARIANTS["original"].template != VARIANTS["prefill"].template
    assert VARIANTS["no_template"].template is None


# --- building -----------------------------------------------------------------------------


def test_session_models_are_small(request) -> None:
    for variant, fixture in FIXTURE_FOR_VARIANT.items():
        path = request.getfixturevalue(fixture)
        assert path.is_file(), variant
        assert path.stat().st_size < MAX_MODEL_BYTES, (variant, path.stat().st_size)


@pytest.mark.parametrize("variant", ["original", "loop"])
def test_build_is_fast(tmp_path: Path, variant: str) -> None:
    start = time.perf_counter()
    path = build_scripted_model(tmp_path / f"{variant}.gguf", variant)
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_BUILD_SECONDS, f"building {variant} took {elapsed:.1f}s"
    assert path.stat().st_size < MAX_MODEL_BYTES


def _read_gguf_header(path: Path) -> tuple[dict[str, tuple], dict[str, tuple[list[int], int]]]:
    """Minimal GGUF header scan (gguf.GGUFReader takes ~10 s on a 152k-token vocabulary).

    Returns ({key: (value_type, array_element_type | None, value or array length)},
             {tensor name: (ne dims, ggml type)}).
    """
    vt = gguf.GGUFValueType
    scalar = {
        vt.UINT8: "<B",
        vt.INT8: "<b",
        vt.UINT16: "<H",
        vt.INT16: "<h",
        vt.UINT32: "<I",
        vt.INT32: "<i",
        vt.FLOAT32: "<f",
        vt.BOOL: "<?",
        vt.UINT64: "<Q",
        vt.INT64: "<q",
        vt.FLOAT64: "<d",
    }
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return data[pos - n : pos].decode("utf-8")

    def value(kind: gguf.GGUFValueType):
        return string() if kind == vt.STRING else take(scalar[kind])

    assert data[:4] == b"GGUF"
    pos = 4
    assert take("<I") == 3  # version
    n_tensors, n_kv = take("<Q"), take("<Q")
    kvs: dict[str, tuple] = {}
    for _ in range(n_kv):
        key = string()
        kind = vt(take("<I"))
        if kind == vt.ARRAY:
            elem = vt(take("<I"))
            count = take("<Q")
            for _ in range(count):
                value(elem)
            kvs[key] = (kind, elem, count)
        else:
            kvs[key] = (kind, None, value(kind))
    tensors: dict[str, tuple[list[int], int]] = {}
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        tensors[name] = (dims, take("<I"))
        take("<Q")  # offset
    return kvs, tensors


def test_gguf_metadata_types(r1_original_model: Path, r1_no_template_model: Path) -> None:
    vt = gguf.GGUFValueType
    kvs, tensors = _read_gguf_header(r1_original_model)

    assert kvs["tokenizer.ggml.tokens"] == (vt.ARRAY, vt.STRING, 152064)
    assert kvs["tokenizer.ggml.token_type"] == (vt.ARRAY, vt.INT32, 152064)
    assert kvs["tokenizer.ggml.merges"][:2] == (vt.ARRAY, vt.STRING)
    assert kvs["tokenizer.ggml.bos_token_id"] == (vt.UINT32, None, BOS_ID)
    assert kvs["tokenizer.ggml.eos_token_id"] == (vt.UINT32, None, EOS_ID)
    assert kvs["tokenizer.ggml.padding_token_id"][0] == vt.UINT32
    assert kvs["tokenizer.ggml.add_bos_token"] == (vt.BOOL, None, True)
    assert kvs["tokenizer.ggml.add_eos_token"] == (vt.BOOL, None, False)
    assert kvs["tokenizer.ggml.model"] == (vt.STRING, None, "gpt2")
    assert kvs["tokenizer.ggml.pre"] == (vt.STRING, None, "deepseek-r1-qwen")
    assert kvs["tokenizer.chat_template"] == (vt.STRING, None, VARIANTS["original"].template)
    assert kvs["general.architecture"] == (vt.STRING, None, "qwen2")
    assert kvs["general.file_type"] == (vt.UINT32, None, int(gguf.LlamaFileType.MOSTLY_F16))
    assert kvs["qwen2.context_length"] == (vt.UINT32, None, 4096)
    assert kvs["qwen2.embedding_length"] == (vt.UINT32, None, 64)
    assert kvs["qwen2.block_count"] == (vt.UINT32, None, 1)

    f16, f32 = int(gguf.GGMLQuantizationType.F16), int(gguf.GGMLQuantizationType.F32)
    assert tensors["token_embd.weight"] == ([64, 152064], f16)  # ne = [n_embd, n_vocab]
    assert tensors["output.weight"] == ([64, 152064], f16)
    assert tensors["blk.0.attn_norm.weight"] == ([64], f32)
    assert len(tensors) == 15

    kvs, _ = _read_gguf_header(r1_no_template_model)
    assert "tokenizer.chat_template" not in kvs
    assert kvs["tokenizer.ggml.tokens"] == (vt.ARRAY, vt.STRING, 152064)


# --- loading and decoding with llama.cpp --------------------------------------------------


def test_prompt_tokens_and_bos(request, loaded) -> None:
    original = _variant_llm(request, loaded, "original")
    prefill = _variant_llm(request, loaded, "prefill")
    assert original.token_bos() == BOS_ID and original.token_eos() == EOS_ID

    tokens = _prompt_tokens(original)
    assert tokens[0] == BOS_ID and tokens.count(BOS_ID) == 1
    assert tokens[-1] == ASSISTANT_ID
    tokens = _prompt_tokens(prefill)
    assert tokens.count(BOS_ID) == 1
    assert tokens[-3:] == [ASSISTANT_ID, THINK_OPEN_ID, NEWLINE_ID]

    # llama.cpp adds its own BOS in front of the template's one when asked to.
    prompt = "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>".encode()
    assert original.tokenize(prompt, add_bos=True, special=True)[:2] == [BOS_ID, BOS_ID]


def test_detokenize_special_tokens(request, loaded) -> None:
    llm = _variant_llm(request, loaded, "original")
    # <think>/</think> are user-defined tokens: text even with special=False ...
    assert _text(llm, [THINK_OPEN_ID, THINK_CLOSE_ID]) == "<think></think>"
    # ... while control tokens such as <｜Assistant｜> and EOS vanish unless special=True.
    assert _text(llm, [ASSISTANT_ID, EOS_ID]) == ""
    assert _special_text(llm, ASSISTANT_ID) == "<｜Assistant｜>"


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
@pytest.mark.parametrize("variant", ["original", "prefill", "markup", *EVAL_VARIANTS])
def test_model_follows_script(request, loaded, variant: str, sampling: str) -> None:
    spec = VARIANTS[variant]
    llm = _variant_llm(request, loaded, variant)
    assert llm.metadata["tokenizer.chat_template"] == spec.template
    prompt = _prompt_tokens(llm)
    seeds = (None,) if sampling == "greedy" else SEEDS
    for seed in seeds:
        if seed is not None:
            llm.set_seed(seed)
        tokens, stopped = _generate(llm, prompt, 100, **SAMPLINGS[sampling])
        assert stopped, "the model must end with EOS"
        assert tokens == list(spec.script)
        assert _text(llm, tokens) == spec.output


def test_original_model_opens_think(request, loaded) -> None:
    llm = _variant_llm(request, loaded, "original")
    tokens, _ = _generate(llm, _prompt_tokens(llm), 100, **GREEDY)
    assert tokens[:2] == [THINK_OPEN_ID, NEWLINE_ID]
    assert _text(llm, tokens).startswith("<think>\n")


def test_markup_answer_holds_escape(request, loaded) -> None:
    llm = _variant_llm(request, loaded, "markup")
    tokens, _ = _generate(llm, _prompt_tokens(llm), 100, **GREEDY)
    raw = llm.detokenize(tokens)
    assert b"\x1b[31m" in raw
    assert raw.decode("utf-8").split("</think>\n\n", 1)[1] == MARKUP_ANSWER_TEXT


def test_eval_texts() -> None:
    assert BOXED_RIGHT_ANSWER_TEXT == "The answer is $\\boxed{42}$."
    assert BOXED_WRONG_ANSWER_TEXT == "The answer is $\\boxed{41}$."
    assert NO_BOX_ANSWER_TEXT == "The answer is 42." and "boxed" not in NO_BOX_OUTPUT_TEXT
    assert BOXED_RIGHT_OUTPUT_TEXT == BOXED_RIGHT_REASONING_TEXT + "</think>\n\n" \
        + BOXED_RIGHT_ANSWER_TEXT
    assert BOXED_WRONG_OUTPUT_TEXT == BOXED_WRONG_REASONING_TEXT + "</think>\n\n" \
        + BOXED_WRONG_ANSWER_TEXT
    assert NO_BOX_OUTPUT_TEXT == BOXED_RIGHT_REASONING_TEXT + "</think>\n\n" + NO_BOX_ANSWER_TEXT
    for variant in EVAL_VARIANTS:
        assert VARIANTS[variant].template == PREFILL_TEMPLATE


@pytest.mark.parametrize("variant", EVAL_VARIANTS)
def test_eval_model_answers(request, loaded, variant: str) -> None:
    """The reasoning and the answer come apart at </think> into exactly the promised texts, with
    the tokens llama.cpp itself gives those texts (so the models emit a natural tokenization)."""
    spec = VARIANTS[variant]
    llm = _variant_llm(request, loaded, variant)
    tokens, stopped = _generate(llm, _prompt_tokens(llm), 100, **SAMPLINGS["r1-recommended"])
    assert stopped
    reasoning, answer = _text(llm, tokens).split("</think>\n\n")
    assert (reasoning, answer) == (spec.reasoning, spec.answer)
    assert llm.tokenize(spec.output.encode(), add_bos=False, special=True) == tokens


@pytest.mark.parametrize("sampling", ["greedy", "t1.5-topk0", "repeat-penalty"])
def test_loop_model_cycles(request, loaded, sampling: str) -> None:
    llm = _variant_llm(request, loaded, "loop")
    cycles = 7
    tokens, stopped = _generate(
        llm, _prompt_tokens(llm), cycles * LOOP_CYCLE_TOKENS, **SAMPLINGS[sampling]
    )
    assert not stopped
    assert len(tokens) == cycles * LOOP_CYCLE_TOKENS
    assert _text(llm, tokens) == LOOP_CYCLE_TEXT * cycles
    assert THINK_CLOSE_ID not in tokens


def test_loop_model_context_length(r1_loop_model: Path) -> None:
    llm = llama_cpp.Llama(model_path=str(r1_loop_model), n_ctx=0, verbose=False)
    try:
        assert llm.metadata["qwen2.context_length"] == str(LOOP_CONTEXT_LENGTH)
        assert llm.n_ctx() == LOOP_CONTEXT_LENGTH  # n_ctx=0 means "the model's own"
    finally:
        llm.close()


def test_no_template_model(request, loaded) -> None:
    llm = _variant_llm(request, loaded, "no_template")
    assert "tokenizer.chat_template" not in llm.metadata
    prompt = _prompt_tokens(llm, template=PREFILL_TEMPLATE)
    for sampling in ("greedy", "t1.5-topk0"):
        tokens, stopped = _generate(llm, prompt, 100, **SAMPLINGS[sampling])
        assert stopped
        assert _text(llm, tokens) == PREFILL_OUTPUT_TEXT


# --- the real small model -----------------------------------------------------------------


def test_smollm2_generates(smollm2_model: Path) -> None:
    assert smollm2_model.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = llama_cpp.Llama(model_path=str(smollm2_model), n_ctx=512, verbose=False)
    try:
        template = llm.metadata.get("tokenizer.chat_template")
        assert template, "SmolLM2 ships a (ChatML) chat template"
        prompt = _prompt_tokens(llm)
        tokens, _ = _generate(llm, prompt, 24, **GREEDY)
        assert tokens
        assert _text(llm, tokens).strip()
    finally:
        llm.close()
