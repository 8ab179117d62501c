"""A memory-bound synthetic target and its drafts, for bench/speculative.py.

Both follow the scripted construction of tests/fixtures/scripted_models.py (a qwen2 GGUF with
DeepSeek-R1-Distill-Qwen's full tokenizer and the think-prefill template, whose one-hot
embeddings make the next token a function of the current one) over one cycle of CYCLE_LENGTH
distinct tokens that it thinks on without end:

* the target (~1 GB) adds TARGET_LAYERS blocks with a wide feed-forward (n_ff TARGET_FF, F16):
  gate and up hold small non-zero values and the down projection is zero, so every token reads
  the whole file (a memory-bound decode, like a real model on a CPU) and the output stays the
  script;
* draft "full" (one layer, ~40 MB) predicts the target's next token everywhere: 100 % of its
  drafts are accepted;
* draft "partial" predicts a wrong token (MISTAKE_TOKEN) for every MISTAKE_PERIOD-th script
  token. A speculative round that starts right after a correction then drafts MISTAKE_PERIOD-1
  right tokens before the wrong one, so with 16 drafted tokens a round keeps 10 of 16: 62.5 %
  acceptance (the target adds its own token each round, 11 tokens per round).

The files go to ~/.cache/localr1-bench/synthetic-pair/ (LOCALR1_BENCH_CACHE moves it), never
into the repository; a file already there is reused.

    python bench/synthetic_pair.py     # build (once) and print the three paths
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))
from llama_cpp_tools import cache_root  # noqa: E402

from tests.fixtures.scripted_models import (  # noqa: E402
    EOS_ID,
    LOGIT_MARGIN,
    LOOP_TOKENS,
    NEWLINE_ID,
    PREFILL_TEMPLATE,
    add_r1_tokenizer,
    decode_pieces,
    load_tokenizer,
)

# 55 distinct tokens (the loop model's sentence without its tail): 5 whole mistake periods, so
# the partial draft's mistakes stay MISTAKE_PERIOD apart across the cycle's end too.
CYCLE = LOOP_TOKENS[:55]
CYCLE_LENGTH = len(CYCLE)
CYCLE_TEXT = decode_pieces(CYCLE)
MISTAKE_PERIOD = 11
MISTAKE_TOKEN = 13824  # "ĠWait": not in the cycle
N_EMBD = 64  # slots 0..55 and one 64-wide attention head
HEAD_DIM = 64
TARGET_LAYERS = 8
TARGET_FF = 327_680  # 8 layers x 3 x 64 x 327,680 F16 = 1.0 GB of feed-forward weights
DRAFT_FF = 64
CONTEXT_LENGTH = 4096
VERSION = 1  # bump when the construction changes, so cached files are rebuilt


def pair_dir() -> Path:
    return cache_root() / "synthetic-pair"


def target_path() -> Path:
    return pair_dir() / f"target-v{VERSION}.gguf"


def draft_path(kind: str) -> Path:
    return pair_dir() / f"draft-{kind}-v{VERSION}.gguf"


def expected_acceptance(kind: str, draft_max: int) -> float:
    """Accepted / drafted in the steady state of rounds of `draft_max` drafted tokens."""
    if kind == "full":
        return 1.0
    return min(MISTAKE_PERIOD - 1, draft_max) / draft_max


def build_all() -> tuple[Path, Path, Path]:
    """Build (once) and return the target, the full draft and the partial draft."""
    target = target_path()
    if not target.exists():
        write_model(target, n_layers=TARGET_LAYERS, n_ff=TARGET_FF, mistakes=False)
    drafts = []
    for kind in ("full", "partial"):
        path = draft_path(kind)
        if not path.exists():
            write_model(path, n_layers=1, n_ff=DRAFT_FF, mistakes=kind == "partial")
        drafts.append(path)
    return target, drafts[0], drafts[1]


def _next_tokens(mistakes: bool) -> np.ndarray:
    """The token each slot predicts: slot 0 (any token outside the cycle, such as the prompt's
    last "\\n") predicts the cycle's first token, slot k (cycle token k-1) predicts token k."""
    cycle = [token_id for _, token_id in CYCLE]
    following = [*cycle[1:], cycle[0]]
    next_ids = np.asarray([cycle[0], *following], dtype=np.int64)
    if mistakes:
        # Slot k predicts cycle position k mod CYCLE_LENGTH; every MISTAKE_PERIOD-th is wrong.
        for slot in range(len(next_ids)):
            if slot % MISTAKE_PERIOD == MISTAKE_PERIOD - 1:
                next_ids[slot] = MISTAKE_TOKEN
    return next_ids


def write_model(path: Path, *, n_layers: int, n_ff: int, mistakes: bool) -> None:
    import gguf

    tok = load_tokenizer()
    n_vocab = len(tok["tokenizer.ggml.tokens"])
    cycle = np.asarray([token_id for _, token_id in CYCLE], dtype=np.int64)
    assert len(set(cycle.tolist())) == CYCLE_LENGTH < N_EMBD
    assert NEWLINE_ID not in cycle and EOS_ID not in cycle and MISTAKE_TOKEN not in cycle

    token_embd = np.zeros((n_vocab, N_EMBD), dtype=np.float16)
    token_embd[:, 0] = 1.0
    token_embd[cycle, 0] = 0.0
    token_embd[cycle, np.arange(1, CYCLE_LENGTH + 1)] = 1.0
    # RMSNorm scales a one-hot to sqrt(n_embd): the predicted token wins by LOGIT_MARGIN.
    output = np.zeros((n_vocab, N_EMBD), dtype=np.float16)
    output[_next_tokens(mistakes), np.arange(0, CYCLE_LENGTH + 1)] = LOGIT_MARGIN / math.sqrt(
        N_EMBD)

    # One array object per role, shared by every layer: the file gets all the bytes, the
    # builder's memory only one copy. Small values keep silu(gate) * up far from F16 overflow.
    tile = np.random.default_rng(17).uniform(-0.01, 0.01, (n_ff, 1)).astype(np.float16)
    gate = np.ascontiguousarray(np.broadcast_to(tile, (n_ff, N_EMBD)))
    up = gate
    down = np.zeros((N_EMBD, n_ff), dtype=np.float16)  # zero: the block changes nothing
    f32 = np.float32
    tensors = {"token_embd.weight": token_embd,
               "output_norm.weight": np.ones(N_EMBD, dtype=f32),
               "output.weight": output}
    for layer in range(n_layers):
        blk = f"blk.{layer}"
        tensors |= {
            f"{blk}.attn_norm.weight": np.ones(N_EMBD, dtype=f32),
            f"{blk}.attn_q.weight": np.zeros((N_EMBD, N_EMBD), dtype=f32),
            f"{blk}.attn_q.bias": np.zeros(N_EMBD, dtype=f32),
            f"{blk}.attn_k.weight": np.zeros((HEAD_DIM, N_EMBD), dtype=f32),
            f"{blk}.attn_k.bias": np.zeros(HEAD_DIM, dtype=f32),
            f"{blk}.attn_v.weight": np.zeros((HEAD_DIM, N_EMBD), dtype=f32),
            f"{blk}.attn_v.bias": np.zeros(HEAD_DIM, dtype=f32),
            f"{blk}.attn_output.weight": np.zeros((N_EMBD, N_EMBD), dtype=f32),
            f"{blk}.ffn_norm.weight": np.ones(N_EMBD, dtype=f32),
            f"{blk}.ffn_gate.weight": gate,
            f"{blk}.ffn_up.weight": up,
            f"{blk}.ffn_down.weight": down,
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(partial, "qwen2")
    try:
        writer.add_name(f"localr1 synthetic {path.stem}")
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(n_ff)
        writer.add_head_count(N_EMBD // HEAD_DIM)
        writer.add_head_count_kv(1)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_rope_freq_base(10000.0)
        add_r1_tokenizer(writer, tokens=tok["tokenizer.ggml.tokens"],
                         types=tok["tokenizer.ggml.token_type"],
                         bos_id=tok["tokenizer.ggml.bos_token_id"],
                         eos_id=tok["tokenizer.ggml.eos_token_id"],
                         add_bos=bool(tok["tokenizer.ggml.add_bos_token"]),
                         template=PREFILL_TEMPLATE)
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    partial.replace(path)  # only a whole file ever has the final name


if __name__ == "__main__":
    for built in build_all():
        print(f"{built}  ({built.stat().st_size / 1e6:.0f} MB)")
