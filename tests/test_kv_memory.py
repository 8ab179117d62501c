"""The KV cache options on real llama.cpp (flash attention, q8_0/q4_0 K and V), and the KV cache
and a draft model counted in the memory estimates, the memory check and the fit labels."""

from __future__ import annotations

import shutil

import pytest

from localr1.engine import loading
from localr1.errors import InsufficientMemoryError, ModelLoadError
from localr1.models import fit, hardware
from localr1.models.catalog import load_catalog
from localr1.models.gguf_header import read_gguf_header
from localr1.models.listing import catalog_rows, configured_draft, installed_rows
from localr1.paths import app_paths
from tests.fixtures import scripted_models as sm
from tests.fixtures.odd_models import write_tiny_model

GB = 10**9
SMOLLM2_PROMPT = (b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                  b"<|im_start|>assistant\n")


def machine(ram_gb: float) -> fit.MachineMemory:
    return fit.MachineMemory(int(ram_gb * GB), int(ram_gb * GB), False, 0, "CPU")


def write_config(text: str) -> None:
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)


# ---- the estimates -------------------------------------------------------------------------


def test_quantized_kv_cache_shrinks_the_estimate(r1_prefill_model):
    header = read_gguf_header(r1_prefill_model)
    f16 = hardware.estimate_memory(header, 4096)
    q8 = hardware.estimate_memory(header, 4096, "q8_0")
    q4 = hardware.estimate_memory(header, 4096, "q4_0")
    # One layer, one KV head of 64: K and V are 128 elements per context slot.
    assert f16.kv_cache_bytes == 4096 * 128 * 2
    assert q8.kv_cache_bytes / f16.kv_cache_bytes == pytest.approx(34 / 64)  # about half
    assert q4.kv_cache_bytes / f16.kv_cache_bytes == pytest.approx(18 / 64)
    assert q8.weights_bytes == f16.weights_bytes == header.data_size
    # The same from catalog numbers: r1:7b's 28 layers x 4 KV heads x 128 at 8k context.
    by_shape = {kv: hardware.estimate_memory_for_shape(0, 28, 4, 128, 128, 8192, kv)
                for kv in ("f16", "q8_0", "q4_0")}
    assert by_shape["f16"].kv_cache_bytes == 28 * 8192 * 4 * 256 * 2  # 470 MB
    assert by_shape["q8_0"].kv_cache_bytes < 0.54 * by_shape["f16"].kv_cache_bytes


def test_a_model_refused_at_f16_fits_at_q4_0():
    r1_7b = load_catalog().get("r1:7b-q4_k_m")
    # 64k tokens of context: f16 KV 3.76 GB, q4_0 1.06 GB, beside 4.68 GB of weights.
    here = machine(7.5)
    at_f16 = fit.assess_catalog_entry(r1_7b, 65536, here)
    at_q4 = fit.assess_catalog_entry(r1_7b, 65536, here, kv_type="q4_0")
    assert at_f16.label == fit.TOO_LARGE and at_q4.label == fit.CPU_IN_RAM
    assert at_q4.kv_cache_bytes == pytest.approx(at_f16.kv_cache_bytes * 18 / 64, rel=1e-6)
    assert "q4_0 KV cache for 65536 tokens" in fit.fit_text(at_q4)
    assert "q4_0" not in fit.fit_text(at_f16)


def test_a_pull_states_its_fit_with_the_configured_kv_type():
    from localr1.models.hub_resolve import PullPlan

    entry = load_catalog().get("r1:7b-q4_k_m")
    plan = PullPlan(entry.name, "r1:7b", entry.repo, "main", "Q4_K_M", (), entry)
    write_config('kv_type = "q8_0"\ncontext_size = 4096\n')
    assert fit.fit_text(fit.plan_fit(plan, machine(64))).endswith(
        ": weights, q8_0 KV cache for 4096 tokens)")


def test_the_memory_check_counts_the_kv_type_and_the_draft(r1_prefill_model):
    header = read_gguf_header(r1_prefill_model)
    free = hardware.memory_info().available_bytes
    # A context whose f16 KV cache is 1.5x the free RAM; its q4_0 cache is 0.42x.
    n_ctx = int(1.5 * free / (128 * 2))
    with pytest.raises(InsufficientMemoryError) as refused:
        loading.check_memory(r1_prefill_model, hardware.estimate_memory(header, n_ctx), 0, n_ctx)
    assert "KV cache " in str(refused.value) and "--kv-type q8_0" in str(refused.value)
    loading.check_memory(r1_prefill_model, hardware.estimate_memory(header, n_ctx, "q4_0"), 0,
                         n_ctx, kv_type="q4_0")
    # The draft's weights and KV cache at the same context count too.
    small_ctx = int(0.4 * free / (128 * 2))
    alone = hardware.estimate_memory(header, small_ctx)
    loading.check_memory(r1_prefill_model, alone, 0, small_ctx)
    with pytest.raises(InsufficientMemoryError, match=r"\+ draft .* or no --draft") as both:
        loading.check_memory(r1_prefill_model, alone, 0, small_ctx,
                             draft=hardware.draft_estimate(header, 2 * small_ctx))
    assert len(str(both.value).splitlines()) == 1


# ---- llama.cpp with the options ------------------------------------------------------------


def _greedy(llm, prompt: bytes, n: int) -> str:
    tokens = llm.tokenize(prompt, special=True)
    return llm.create_completion(tokens, max_tokens=n, temperature=0)["choices"][0]["text"]


@pytest.mark.parametrize(("flash_attn", "kv_type"), [("auto", "q8_0"), ("on", "q4_0"),
                                                     ("off", "f16")])
def test_scripted_model_answers_with_each_kv_option(r1_original_model, flash_attn, kv_type):
    header = read_gguf_header(r1_original_model)
    llm = loading.load_llama(r1_original_model, header, 512, 0, 1, flash_attn=flash_attn,
                             kv_type=kv_type)
    try:
        prompt = "<｜User｜>hi<｜Assistant｜>".encode()
        assert _greedy(llm, prompt, 64) == sm.ORIGINAL_OUTPUT_TEXT
    finally:
        llm.close()


def test_smollm2_with_a_q8_0_kv_cache_gives_the_same_answer_in_half_the_memory(smollm2_model):
    import llama_cpp

    header = read_gguf_header(smollm2_model)
    answers, state_sizes = {}, {}
    for kv_type in ("f16", "q8_0"):
        llm = loading.load_llama(smollm2_model, header, 512, 0, 2, kv_type=kv_type)
        try:
            answers[kv_type] = _greedy(llm, SMOLLM2_PROMPT, 12)
            # The sequence's saved state holds its K and V cells in the cache's own type.
            state_sizes[kv_type] = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
        finally:
            llm.close()
    assert "Paris" in answers["f16"] and answers["q8_0"] == answers["f16"]
    assert 0.45 < state_sizes["q8_0"] / state_sizes["f16"] < 0.6


def test_apply_kv_options_sets_raw_context_params():
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    loading.apply_kv_options(params, "on", "q4_0")
    assert params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert params.type_k == params.type_v == llama_cpp.GGML_TYPE_Q4_0
    loading.apply_kv_options(params, "auto", "f16")
    assert params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    assert params.type_k == params.type_v == llama_cpp.GGML_TYPE_F16
    loading.apply_kv_options(params, "off", "q8_0")
    assert params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    assert params.type_k == llama_cpp.GGML_TYPE_Q8_0


def test_a_quantized_kv_cache_without_flash_attention_is_one_line(r1_prefill_model,
                                                                  monkeypatch):
    header = read_gguf_header(r1_prefill_model)
    with pytest.raises(ModelLoadError) as before:
        loading.load_llama(r1_prefill_model, header, 512, 0, 1, flash_attn="off",
                           kv_type="q8_0")
    assert str(before.value) == (f"{r1_prefill_model.name}: a q8_0 KV cache needs flash "
                                 "attention; use --flash-attn on or auto, or --kv-type f16")
    # What llama.cpp says itself when flash attention cannot be on (as for a model it forces
    # off), in one line too.
    monkeypatch.setattr(loading, "check_kv_options", lambda *args: None)
    with pytest.raises(ModelLoadError) as refused:
        loading.load_llama(r1_prefill_model, header, 512, 0, 1, flash_attn="off",
                           kv_type="q8_0")
    message = str(refused.value)
    assert "cannot use flash attention" in message and "use --kv-type f16" in message
    assert len(message.splitlines()) == 1


def test_a_head_size_the_quantized_blocks_do_not_divide_is_one_line(tmp_path, monkeypatch):
    path = write_tiny_model(tmp_path / "tiny.gguf")  # heads of 16, q8_0 blocks of 32
    header = read_gguf_header(path)
    with pytest.raises(ModelLoadError, match="a q8_0 KV cache needs a head size that is a "
                                             "multiple of 32, and this model's key heads have "
                                             "16; use --kv-type f16"):
        loading.load_llama(path, header, 128, 0, 1, kv_type="q8_0")
    # llama.cpp refuses it as well: the check only says so earlier and clearer.
    monkeypatch.setattr(loading, "check_kv_options", lambda *args: None)
    with pytest.raises(ModelLoadError, match="does not divide n_embd_head_k=16") as refused:
        loading.load_llama(path, header, 128, 0, 1, kv_type="q8_0")
    assert len(str(refused.value).splitlines()) == 1
    loading.load_llama(path, header, 128, 0, 1, kv_type="f16").close()


# ---- fit labels with config.toml's kv_type and draft ----------------------------------------


@pytest.fixture()
def two_models(r1_prefill_model, r1_original_model):
    models_dir = app_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(r1_prefill_model, models_dir / "big.gguf")
    shutil.copy(r1_original_model, models_dir / "small.gguf")
    return models_dir


def test_list_counts_the_configured_kv_type(two_models):
    plain = {row.name: row.fit for row in installed_rows(two_models, machine(64))}
    write_config('kv_type = "q8_0"\n')
    q8 = {row.name: row.fit for row in installed_rows(two_models, machine(64))}
    assert q8["big"].kv_type == "q8_0"
    assert q8["big"].kv_cache_bytes == pytest.approx(plain["big"].kv_cache_bytes * 34 / 64,
                                                     rel=1e-6)
    by_name = {row.name: row for row in catalog_rows(load_catalog(), two_models, machine(64))}
    assert by_name["r1:7b-q4_k_m"].fit.kv_type == "q8_0"


def test_fit_labels_count_the_configured_draft_model(two_models):
    write_config('draft_model = "small"\ncontext_size = 4096\n')
    draft = configured_draft("small", two_models)
    assert draft is not None and draft.model_name == "small"
    rows = {row.name: row for row in installed_rows(two_models, machine(64))}
    big, small = rows["big"], rows["small"]
    assert big.fit_label == f"{fit.CPU_IN_RAM} (with draft)"
    assert small.fit_label == fit.CPU_IN_RAM  # not counted beside itself
    draft_needs = hardware.estimate_memory(read_gguf_header(two_models / "small.gguf"),
                                           4096).total_bytes
    assert big.fit.draft_bytes == draft_needs
    assert big.fit.needed_bytes == big.fit.weights_bytes + big.fit.kv_cache_bytes + \
        hardware.COMPUTE_OVERHEAD_BYTES + draft_needs
    assert big.to_json()["fit"] == fit.CPU_IN_RAM and big.to_json()["draft_bytes"] == draft_needs
    # Room for one model but not for two: the draft makes it too large.
    one_only = (max(big.fit.needed_bytes - draft_needs, small.fit.needed_bytes) + 1) / GB
    tight = {row.name: row for row in installed_rows(two_models, machine(one_only))}
    assert tight["big"].fit_label == f"{fit.TOO_LARGE} (with draft)"
    assert tight["small"].fit.runs
    # Catalog rows too, in `localr1 list --available`'s FIT column.
    catalog = {row.name: row for row in catalog_rows(load_catalog(), two_models, machine(64))}
    assert catalog["r1:7b-q4_k_m"].fit_label.endswith("(with draft)")


def test_no_draft_is_counted_for_lookup_none_or_a_missing_model(two_models):
    for setting in ("lookup", "none", "nothing-here", "/no/such/file.gguf"):
        write_config(f'draft_model = "{setting}"\n')
        assert configured_draft(setting, two_models) is None
        rows = installed_rows(two_models, machine(64))
        assert all(row.fit.draft_bytes == 0 and "draft" not in row.fit_label for row in rows)
    # A GGUF path that is not installed counts.
    path = two_models / "small.gguf"
    write_config(f'draft_model = "{path}"\n')
    rows = {row.name: row for row in installed_rows(two_models, machine(64))}
    assert rows["big"].fit.draft_bytes > 0


# ---- through the engine ----------------------------------------------------------------------


def test_the_engine_decodes_with_a_q8_0_kv_cache(smollm2_model):
    from localr1.chat_message import ChatMessage
    from localr1.engine.events import AnswerDelta, GenerationParams
    from localr1.engine.llama_engine import Engine, EngineConfig

    answers = {}
    for kv_type in ("f16", "q8_0"):
        config = EngineConfig(smollm2_model, context_size=512, kv_type=kv_type)
        with Engine.load(config) as engine:
            assert engine.info.kv_type == kv_type
            events = engine.stream_chat([ChatMessage("user", "What is the capital of France?")],
                                        GenerationParams(temperature=0.0, max_tokens=12))
            answers[kv_type] = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert answers["f16"].strip() and answers["q8_0"] == answers["f16"]


def test_loading_refuses_a_draft_that_does_not_fit_beside_the_model(r1_prefill_model, tmp_path):
    from localr1.engine.llama_engine import Engine, EngineConfig
    from tests.fixtures.odd_models import write_huge_sparse_model

    draft = write_huge_sparse_model(tmp_path / "huge-draft.gguf", tensor_bytes=2**40)  # 1 TiB
    with pytest.raises(InsufficientMemoryError, match=r"\+ draft 1\.1 TB\) but only .* or no "
                                                      r"--draft"):
        Engine.load(EngineConfig(r1_prefill_model, gpu_layers=0, context_size=512, draft=draft))
