"""The drafters of speculative decoding: a small draft model run greedily on its own
llama_context, or prompt lookup (n-grams of the text so far). Both follow the DecodeLoop's
Drafter protocol: per sequence, a view of the context kept in step by reset/propose/truncate.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from localr1.engine.decode_loop import put_token
from localr1.engine.lookup_drafter import NgramLookup
from localr1.errors import GenerationError, ModelLoadError
from localr1.models.gguf_header import read_gguf_header

DRAFT_BATCH = 512


class DraftModel:
    """A draft GGUF loaded once per Engine; each decode loop gets its own context on it."""

    def __init__(self, path: Path, gpu_layers: int, *, cpu_only: bool = False) -> None:
        """`cpu_only`: on this machine's CPU with no device at all, for a model split over RPC
        workers. llama.cpp uses every registered device: the draft's layers would go to the
        workers (uncounted, a network trip per drafted token), and even with none offloaded
        it would list the workers as the draft's devices."""
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.path = path
        self.header = read_gguf_header(path)  # before llama.cpp: it may abort on bad files
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0 if cpu_only else gpu_layers
        no_devices = (ctypes.c_void_p * 1)()  # an empty NULL-terminated list: not "all" (NULL)
        if cpu_only:
            params.devices = ctypes.addressof(no_devices)
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelLoadError(f"{path.name}: llama.cpp could not load this draft model")
        self.name = self.header.name or path.stem

    def close(self) -> None:
        if self.model:
            self._llama_cpp.llama_model_free(self.model)
            self.model = None


class ModelDrafter:
    """Greedy drafting with a draft model (llama.cpp's draft-simple without a probability
    cutoff, its default): the draft's KV cache follows each sequence's context."""

    def __init__(self, draft: DraftModel, n_seq: int, n_ctx_per_sequence: int, threads: int,
                 new_context) -> None:
        """`new_context(model, n_seq, n_ctx_per_sequence, n_batch, threads)`: the target's
        (Engine.new_context), so the draft's KV cache takes the same options."""
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._ctx = new_context(draft.model, n_seq, n_ctx_per_sequence, DRAFT_BATCH, threads)
        if not self._ctx:
            raise GenerationError(f"llama.cpp could not create a context for the draft model "
                                  f"{draft.name}")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(DRAFT_BATCH, 0, 1)
        self._greedy = llama_cpp.llama_sampler_init_greedy()
        self._vocab = llama_cpp.llama_model_get_vocab(draft.model)
        self._views: dict[int, list[int]] = {}

    def reset(self, seq_id: int, keep: int) -> None:
        self.truncate(seq_id, keep)

    def truncate(self, seq_id: int, n: int) -> None:
        view = self._views.setdefault(seq_id, [])
        if len(view) > n:
            del view[n:]
            self._llama_cpp.llama_memory_seq_rm(self._memory, seq_id, n, -1)

    def propose(self, seq_id: int, context: list[int], n_max: int) -> list[int]:
        llama_cpp = self._llama_cpp
        view = self._views.setdefault(seq_id, [])
        if len(view) >= len(context):  # nothing new: feed the last token again for its logits
            self.truncate(seq_id, len(context) - 1)
        new = context[len(view):]
        for start in range(0, len(new), DRAFT_BATCH):
            chunk = new[start:start + DRAFT_BATCH]
            self._decode(seq_id, chunk, len(view), last_logits=start + len(chunk) == len(new))
            view.extend(chunk)
        draft: list[int] = []
        while True:
            token = llama_cpp.llama_sampler_sample(self._greedy, self._ctx, -1)
            draft.append(token)
            if len(draft) >= n_max or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                return draft
            self._decode(seq_id, [token], len(view), last_logits=True)
            view.append(token)

    def _decode(self, seq_id: int, tokens: list[int], pos: int, last_logits: bool) -> None:
        batch = self._batch
        for i, token in enumerate(tokens):
            put_token(batch, i, token, pos + i, seq_id, last_logits and i == len(tokens) - 1)
        batch.n_tokens = len(tokens)
        # Not under rpc_watchdog: under --rpc the draft runs on this CPU alone (cpu_only).
        result = self._llama_cpp.llama_decode(self._ctx, batch)
        if result != 0:
            raise GenerationError(f"llama.cpp failed while drafting (llama_decode {result})")

    def set_threads(self, threads: int) -> None:
        self._llama_cpp.llama_set_n_threads(self._ctx, threads, threads)

    def close(self) -> None:
        if self._ctx:
            llama_cpp = self._llama_cpp
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_sampler_free(self._greedy)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None


class LookupDrafter:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the text's
    last n-gram (no second model; good when the answer repeats the prompt, as in edits)."""

    def __init__(self) -> None:
        self._lookups: dict[int, NgramLookup] = {}
        self._seen: dict[int, int] = {}

    def reset(self, seq_id: int, keep: int) -> None:
        self.truncate(seq_id, keep)

    def truncate(self, seq_id: int, n: int) -> None:
        if self._seen.get(seq_id, 0) > n:
            self._lookups[seq_id].truncate(n)
            self._seen[seq_id] = n

    def propose(self, seq_id: int, context: list[int], n_max: int) -> list[int]:
        lookup = self._lookups.setdefault(seq_id, NgramLookup())
        seen = self._seen.get(seq_id, 0)
        lookup.extend(context[seen:])
        self._seen[seq_id] = len(context)
        return lookup.propose(n_max)

    def set_threads(self, threads: int) -> None:
        pass  # no model, no threads

    def close(self) -> None:
        self._lookups.clear()

