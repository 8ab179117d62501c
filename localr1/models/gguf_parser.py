"""The low-level GGUF header parser: one buffer over the file's start, read in place.

Used by :func:`localr1.models.gguf_header.read_gguf_header`, which turns its two exceptions into
one-line messages. Arrays longer than :data:`MAX_LIST_ITEMS` are skipped, not materialised: they
appear in the metadata as :class:`GGUFArraySummary`. Skipping a string array still means
reading every length prefix, which is done in a tight loop over one buffer with a precompiled
struct.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from localr1.models.gguf_types import (
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGML_TYPES,
    GGML_TYPES_REMOVED,
    GGUF_VALUE_TYPES,
)

MAX_LIST_ITEMS = 1024
"""Arrays with more items than this are returned as a GGUFArraySummary instead of a list."""

MAX_ARRAY_DEPTH = 8  # nested arrays deeper than this are treated as corruption
INITIAL_READ = 8 << 20  # an R1 distill header is about 6 MB; one read usually covers it

_T_UINT32 = 4
_T_BOOL = 7
_T_STRING = 8
_T_ARRAY = 9
_SCALAR_STRUCTS = {
    t: struct.Struct("<" + fmt) for t, (_, fmt) in GGUF_VALUE_TYPES.items() if fmt is not None
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
HEADER = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv

_ABSURD_COUNT = 1 << 32
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


@dataclass(frozen=True)
class GGUFArraySummary:
    """Stands in for a metadata array too long to materialise (e.g. a 152k-token vocabulary)."""

    item_type: int
    length: int

    @property
    def item_type_name(self) -> str:
        return GGUF_VALUE_TYPES.get(self.item_type, (f"type {self.item_type}", None))[0]

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the innermost, contiguous dimension) first
    ggml_type: int
    type_name: str  # e.g. "Q4_K", "F16"
    offset: int  # relative to GGUFHeader.data_offset
    n_bytes: int
    n_elements: int



class Truncated(Exception):
    """The header runs past the end of the file."""


class Corrupt(Exception):
    """The header is not a valid GGUF header; the message says why."""


class Buffer:
    """The start of a file, read in one go and grown (doubling) when the header is longer."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.data = b""
        self.ensure(min(size, INITIAL_READ))

    def ensure(self, end: int) -> None:
        """Make data[:end] available, or raise Truncated if the file is shorter than end."""
        have = len(self.data)
        if end <= have:
            return
        if end > self.size:
            raise Truncated
        want = min(self.size, max(end, 2 * have))
        self.f.seek(have)
        chunks = [self.data]
        while have < want:
            chunk = self.f.read(want - have)
            if not chunk:  # the file shrank while we read it
                self.size = have
                break
            chunks.append(chunk)
            have += len(chunk)
        # The usual case, one read into an empty buffer, needs no copy.
        self.data = chunks[1] if len(chunks) == 2 and not chunks[0] else b"".join(chunks)
        if end > self.size:
            raise Truncated


class Parser:
    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.pos = 0
        self.where = "the file header"

    # -- primitives ---------------------------------------------------------------------------

    def _unpack(self, st: struct.Struct) -> Any:
        self.buf.ensure(self.pos + st.size)
        (value,) = st.unpack_from(self.buf.data, self.pos)
        self.pos += st.size
        return value

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def string(self, what: str) -> str:
        n = self.u64()
        self._check_len(n, what)
        end = self.pos + n
        self.buf.ensure(end)
        raw = self.buf.data[self.pos : end]
        self.pos = end
        return raw.decode("utf-8", errors="replace")

    def _check_len(self, n: int, what: str) -> None:
        if n > self.buf.size:
            raise Corrupt(f"{what} claims {n:,} bytes, more than the whole file")

    def _check_count(self, n: int, min_item: int, what: str) -> None:
        # A count that cannot fit in the rest of the file is either corruption or a truncated
        # file; only counts no real header has (4 billion entries and more) are called corrupt.
        # Smaller ones need no check: every item consumes bytes, so a loop over them stops at
        # the end of the file with a "truncated" error, and nothing is allocated up front.
        if n >= _ABSURD_COUNT and n * min_item > self.buf.size - self.pos:
            raise Corrupt(f"{what} claims {n:,} entries, more than the file could hold")

    # -- metadata -----------------------------------------------------------------------------

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype == _T_STRING:
            return self.string("a string value")
        if vtype == _T_ARRAY:
            return self.array(depth + 1)
        st = _SCALAR_STRUCTS.get(vtype)
        if st is None:
            raise Corrupt(f"unknown metadata value type {vtype}")
        return self._unpack(st)

    def array(self, depth: int) -> Any:
        if depth > MAX_ARRAY_DEPTH:
            raise Corrupt(f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
        item_type = self.u32()
        n = self.u64()
        if item_type == _T_STRING:
            self._check_count(n, 8, "an array of strings")
            if n > MAX_LIST_ITEMS:
                self._skip_strings(n)
                return GGUFArraySummary(item_type, n)
            return [self.string("a string in an array") for _ in range(n)]
        if item_type == _T_ARRAY:
            self._check_count(n, 12, "an array of arrays")
            if n > MAX_LIST_ITEMS:
                for _ in range(n):
                    self.array(depth + 1)
                return GGUFArraySummary(item_type, n)
            return [self.array(depth + 1) for _ in range(n)]
        st = _SCALAR_STRUCTS.get(item_type)
        if st is None:
            raise Corrupt(f"unknown array item type {item_type}")
        self._check_count(n, st.size, "an array")
        end = self.pos + n * st.size
        self.buf.ensure(end)
        if n > MAX_LIST_ITEMS:
            self.pos = end
            return GGUFArraySummary(item_type, n)
        fmt = GGUF_VALUE_TYPES[item_type][1]
        items = list(struct.unpack_from(f"<{n}{fmt}", self.buf.data, self.pos))
        self.pos = end
        return items

    def _skip_strings(self, n: int) -> None:
        """Skip n length-prefixed strings: the hot loop for vocabularies and merges."""
        buf = self.buf
        unpack = _U64.unpack_from
        size = buf.size
        pos = self.pos
        left = n
        length = 0
        while left:
            data = buf.data
            done = 0
            # Walk what is already buffered; reading a length past its end raises struct.error.
            try:
                for done in range(left):  # noqa: B007 - done is used after the loop
                    length = unpack(data, pos)[0]
                    pos += 8 + length
                done = left
            except struct.error:
                pass
            left -= done
            if pos > size:  # the last string read runs past the end of the file
                self._check_len(length, "a string in an array")
                raise Truncated
            if left:
                buf.ensure(pos + 8)
        buf.ensure(pos)  # the last string's bytes
        self.pos = pos

    def metadata(self, n_kv: int) -> dict[str, Any]:
        self._check_count(n_kv, _MIN_KV_BYTES, "the metadata count")
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            self.where = f"metadata entry #{i + 1} of {n_kv}"
            key = self.string("a metadata key")
            self.where = f"metadata entry {key!r}"
            if key in metadata:
                raise Corrupt(f"duplicate metadata key {key!r}")
            vtype = self.u32()
            if vtype not in GGUF_VALUE_TYPES:
                raise Corrupt(f"metadata {key!r} has unknown value type {vtype}")
            try:
                metadata[key] = self.value(vtype)
            except Corrupt as e:
                raise Corrupt(f"metadata {key!r}: {e}") from None
        return metadata

    # -- tensor infos -------------------------------------------------------------------------

    def tensor_infos(self, n_tensors: int, alignment: int) -> list[GGUFTensorInfo]:
        self._check_count(n_tensors, _MIN_TENSOR_INFO_BYTES, "the tensor count")
        tensors: list[GGUFTensorInfo] = []
        names: set[str] = set()
        for i in range(n_tensors):
            self.where = f"tensor info #{i + 1} of {n_tensors}"
            name = self.string("a tensor name")
            self.where = f"tensor info #{i + 1} of {n_tensors} ({name!r})"
            if len(name.encode("utf-8", errors="surrogateescape")) >= GGML_MAX_NAME:
                raise Corrupt(f"tensor name {name[:80]!r} is {GGML_MAX_NAME} bytes or longer")
            if name in names:
                raise Corrupt(f"duplicate tensor {name!r}")
            names.add(name)
            n_dims = self.u32()
            if n_dims > GGML_MAX_DIMS:
                raise Corrupt(f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
            shape = tuple(self.u64() for _ in range(n_dims))
            n_elements = 1
            for d in shape:
                n_elements *= d
            if any(d >= 1 << 63 for d in shape) or n_elements >= 1 << 63:
                raise Corrupt(f"tensor {name!r} has an impossible shape {shape}")
            ggml_type = self.u32()
            offset = self.u64()
            if ggml_type in GGML_TYPES_REMOVED:
                tname = GGML_TYPES_REMOVED[ggml_type][0]
                raise Corrupt(
                    f"tensor {name!r} uses ggml type {tname}, which current llama.cpp no longer "
                    "loads (re-download or re-convert the model)"
                )
            if ggml_type not in GGML_TYPES:
                raise Corrupt(f"tensor {name!r} has unknown ggml type {ggml_type}")
            type_name, block, block_bytes = GGML_TYPES[ggml_type]
            ne0 = shape[0] if shape else 1
            if ne0 % block:
                raise Corrupt(
                    f"tensor {name!r} ({type_name}) has row length {ne0}, "
                    f"not a multiple of its block size {block}"
                )
            if offset % alignment:
                raise Corrupt(f"tensor {name!r} offset {offset} is not {alignment}-byte aligned")
            n_bytes = n_elements // block * block_bytes
            tensors.append(
                GGUFTensorInfo(name, shape, ggml_type, type_name, offset, n_bytes, n_elements)
            )
        return tensors
