"""Read and check a GGUF file's header before llama.cpp ever sees the file.

llama.cpp can abort the whole process on a damaged model file, so everything a user can get
wrong (a missing path, a directory, an HTML error page saved as ``.gguf``, a partial download,
a corrupt header) is caught here first and reported as a one-line :class:`ModelFileError` whose
message starts with the file path.

Standard library only: the ``gguf`` PyPI package is a test dependency, not a runtime one, so the
ggml tensor-type table and llama.cpp's file-type table are carried here.

Speed: a DeepSeek-R1 distill GGUF holds a 152k-token vocabulary and 151k merges in its header.
Arrays longer than :data:`MAX_LIST_ITEMS` are skipped, not materialised: they appear in
``metadata`` as :class:`GGUFArraySummary`.  Skipping a string array still means reading every
length prefix, which is done in a tight loop over one buffer with a precompiled struct.
Tensor data is never read.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from localr1.errors import ModelFileError
from localr1.sizes import format_bytes

__all__ = [
    "GGML_TYPES",
    "GGML_TYPES_REMOVED",
    "GGUFArraySummary",
    "GGUFHeader",
    "GGUFTensorInfo",
    "GGUF_VALUE_TYPES",
    "LLAMA_FTYPES",
    "MAX_LIST_ITEMS",
    "read_gguf_header",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_LIST_ITEMS = 1024
"""Arrays with more items than this are returned as a GGUFArraySummary instead of a list."""

GGML_MAX_DIMS = 4  # ggml.h
GGML_MAX_NAME = 64  # ggml.h: tensor names must be shorter than this
_MAX_ARRAY_DEPTH = 8  # nested arrays deeper than this are treated as corruption
_INITIAL_READ = 8 << 20  # an R1 distill header is about 6 MB; one read usually covers it

# ggml_type id -> (name, elements per block, bytes per block), as in ggml.h / ggml.c type_traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# Types that once existed in GGUF files but that current llama.cpp refuses to load.
GGML_TYPES_REMOVED: dict[int, tuple[str, int, int]] = {
    4: ("Q4_2", 32, 18),
    5: ("Q4_3", 32, 20),
    31: ("Q4_0_4_4", 32, 18),
    32: ("Q4_0_4_8", 32, 18),
    33: ("Q4_0_8_8", 32, 18),
    36: ("IQ4_NL_4_4", 32, 18),
    37: ("IQ4_NL_4_8", 32, 18),
    38: ("IQ4_NL_8_8", 32, 18),
}

# llama_ftype (llama.h) -> short name, as used in GGUF file names ("Q4_K_M", not "Q4_K - Medium").
LLAMA_FTYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    5: "Q4_2",
    6: "Q4_3",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
_LLAMA_FTYPE_GUESSED = 1024

# GGUF metadata value types: id -> (name, struct format or None for STRING/ARRAY).
GGUF_VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("UINT8", "B"),
    1: ("INT8", "b"),
    2: ("UINT16", "H"),
    3: ("INT16", "h"),
    4: ("UINT32", "I"),
    5: ("INT32", "i"),
    6: ("FLOAT32", "f"),
    7: ("BOOL", "?"),
    8: ("STRING", None),
    9: ("ARRAY", None),
    10: ("UINT64", "Q"),
    11: ("INT64", "q"),
    12: ("FLOAT64", "d"),
}
_T_UINT32 = 4
_T_BOOL = 7
_T_STRING = 8
_T_ARRAY = 9
_SCALAR_STRUCTS = {
    t: struct.Struct("<" + fmt) for t, (_, fmt) in GGUF_VALUE_TYPES.items() if fmt is not None
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv

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


def _as_int(value: Any) -> int | None:
    """An int metadata value; for per-layer arrays of ints, the largest (an upper bound)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return max(value)
    return None


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensorInfo, ...]
    data_offset: int  # aligned absolute start of tensor data
    data_size: int  # bytes of tensor data the header promises (max offset + n_bytes)
    file_size: int

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _arch_int(self, suffix: str) -> int | None:
        arch = self.architecture
        if arch is None:
            return None
        return _as_int(self.metadata.get(f"{arch}.{suffix}"))

    @property
    def architecture(self) -> str | None:
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def block_count(self) -> int | None:
        return self._arch_int("block_count")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def head_count(self) -> int | None:
        return self._arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        kv = self._arch_int("attention.head_count_kv")
        return kv if kv is not None else self.head_count

    def _head_dim(self) -> int | None:
        embd, heads = self.embedding_length, self.head_count
        if embd is None or not heads:
            return None
        return embd // heads

    @property
    def key_length(self) -> int | None:
        k = self._arch_int("attention.key_length")
        return k if k is not None else self._head_dim()

    @property
    def value_length(self) -> int | None:
        v = self._arch_int("attention.value_length")
        return v if v is not None else self._head_dim()

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> str | None:
        ftype = _as_int(self.metadata.get("general.file_type"))
        if ftype is None:
            return None
        guessed = ftype & _LLAMA_FTYPE_GUESSED
        base = ftype & ~_LLAMA_FTYPE_GUESSED
        name = LLAMA_FTYPES.get(base, f"unknown file type {base}")
        return f"{name} (guessed)" if guessed else name

    @property
    def split_count(self) -> int:
        count = _as_int(self.metadata.get("split.count"))
        return count if count and count > 0 else 1


# --------------------------------------------------------------------------------------------
# Parsing


class _Truncated(Exception):
    """The header runs past the end of the file."""


class _Corrupt(Exception):
    """The header is not a valid GGUF header; the message says why."""


class _Buffer:
    """The start of a file, read in one go and grown (doubling) when the header is longer."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.data = b""
        self.ensure(min(size, _INITIAL_READ))

    def ensure(self, end: int) -> None:
        """Make data[:end] available, or raise _Truncated if the file is shorter than end."""
        have = len(self.data)
        if end <= have:
            return
        if end > self.size:
            raise _Truncated
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
            raise _Truncated


class _Parser:
    def __init__(self, buf: _Buffer) -> None:
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
            raise _Corrupt(f"{what} claims {n:,} bytes, more than the whole file")

    def _check_count(self, n: int, min_item: int, what: str) -> None:
        # A count that cannot fit in the rest of the file is either corruption or a truncated
        # file; only counts no real header has (4 billion entries and more) are called corrupt.
        # Smaller ones need no check: every item consumes bytes, so a loop over them stops at
        # the end of the file with a "truncated" error, and nothing is allocated up front.
        if n >= _ABSURD_COUNT and n * min_item > self.buf.size - self.pos:
            raise _Corrupt(f"{what} claims {n:,} entries, more than the file could hold")

    # -- metadata -----------------------------------------------------------------------------

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype == _T_STRING:
            return self.string("a string value")
        if vtype == _T_ARRAY:
            return self.array(depth + 1)
        st = _SCALAR_STRUCTS.get(vtype)
        if st is None:
            raise _Corrupt(f"unknown metadata value type {vtype}")
        return self._unpack(st)

    def array(self, depth: int) -> Any:
        if depth > _MAX_ARRAY_DEPTH:
            raise _Corrupt(f"arrays nested more than {_MAX_ARRAY_DEPTH} deep")
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
            raise _Corrupt(f"unknown array item type {item_type}")
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
                raise _Truncated
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
                raise _Corrupt(f"duplicate metadata key {key!r}")
            vtype = self.u32()
            if vtype not in GGUF_VALUE_TYPES:
                raise _Corrupt(f"metadata {key!r} has unknown value type {vtype}")
            try:
                metadata[key] = self.value(vtype)
            except _Corrupt as e:
                raise _Corrupt(f"metadata {key!r}: {e}") from None
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
                raise _Corrupt(f"tensor name {name[:80]!r} is {GGML_MAX_NAME} bytes or longer")
            if name in names:
                raise _Corrupt(f"duplicate tensor {name!r}")
            names.add(name)
            n_dims = self.u32()
            if n_dims > GGML_MAX_DIMS:
                raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
            shape = tuple(self.u64() for _ in range(n_dims))
            n_elements = 1
            for d in shape:
                n_elements *= d
            if any(d >= 1 << 63 for d in shape) or n_elements >= 1 << 63:
                raise _Corrupt(f"tensor {name!r} has an impossible shape {shape}")
            ggml_type = self.u32()
            offset = self.u64()
            if ggml_type in GGML_TYPES_REMOVED:
                tname = GGML_TYPES_REMOVED[ggml_type][0]
                raise _Corrupt(
                    f"tensor {name!r} uses ggml type {tname}, which current llama.cpp no longer "
                    "loads (re-download or re-convert the model)"
                )
            if ggml_type not in GGML_TYPES:
                raise _Corrupt(f"tensor {name!r} has unknown ggml type {ggml_type}")
            type_name, block, block_bytes = GGML_TYPES[ggml_type]
            ne0 = shape[0] if shape else 1
            if ne0 % block:
                raise _Corrupt(
                    f"tensor {name!r} ({type_name}) has row length {ne0}, "
                    f"not a multiple of its block size {block}"
                )
            if offset % alignment:
                raise _Corrupt(f"tensor {name!r} offset {offset} is not {alignment}-byte aligned")
            n_bytes = n_elements // block * block_bytes
            tensors.append(
                GGUFTensorInfo(name, shape, ggml_type, type_name, offset, n_bytes, n_elements)
            )
        return tensors


def _describe_non_gguf(head: bytes) -> str:
    """A short guess at what a non-GGUF file is, for the error message."""
    low = head.lstrip()[:64].lower()
    if head.startswith(b"PK\x03\x04"):
        return ", a zip archive (a PyTorch checkpoint?)"
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        return ", a web page: the download probably saved an error page"
    if head.startswith(b"version https://git-lfs"):
        return ", a Git LFS pointer: fetch the real file with 'git lfs pull'"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg"):
        return ", an old GGML/GGJT model: convert it to GGUF"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return ", it looks like safetensors: convert it to GGUF"
    if low.startswith((b"{", b"[")):
        return ", it looks like JSON"
    if head.startswith(b"\x1f\x8b"):
        return ", a gzip archive"
    return ""


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    p = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{p}: no such file") from None
    except PermissionError:
        raise ModelFileError(f"{p}: permission denied") from None
    except OSError as e:
        raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{p}: is a directory, not a GGUF file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{p}: not a regular file")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except PermissionError:
        raise ModelFileError(f"{p}: permission denied") from None
    except OSError as e:
        raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
    return f, os.fstat(f.fileno()).st_size


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse and validate a GGUF file's header; raise ModelFileError if llama.cpp could not use it.

    Checks the magic and version, every metadata entry and tensor info, and that the tensor
    data the header promises fits in the file (a partial download fails here).  Split GGUF
    parts carry their own tensors, so the same check applies to each part.
    """
    path = Path(path)
    p = str(path)
    f, file_size = _open_regular(path)
    with f:
        if file_size == 0:
            raise ModelFileError(f"{p}: empty file (0 bytes; an interrupted download?)")
        try:
            buf = _Buffer(f, file_size)
            buf.ensure(min(file_size, 64))
        except OSError as e:
            raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
        except _Truncated:  # the file shrank while we read it
            raise ModelFileError(
                f"{p}: truncated GGUF (the file changed while being read)"
            ) from None
        head = bytes(buf.data[:64])
        if not head.startswith(GGUF_MAGIC):
            if GGUF_MAGIC.startswith(head):  # fewer than 4 bytes, all of them right
                raise ModelFileError(
                    f"{p}: truncated GGUF: only {format_bytes(file_size)} "
                    "(an interrupted download?)"
                )
            raise ModelFileError(
                f"{p}: not a GGUF file (starts with {head[:4]!r}{_describe_non_gguf(head)})"
            )
        parser = _Parser(buf)
        try:
            return _parse(parser, path, file_size)
        except _Truncated:
            raise ModelFileError(
                f"{p}: truncated GGUF: the file ends ({format_bytes(file_size)}) inside the "
                f"header, in {parser.where} (an interrupted download?)"
            ) from None
        except _Corrupt as e:
            raise ModelFileError(f"{p}: corrupt GGUF header: {e} (in {parser.where})") from None
        except OSError as e:
            raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None


def _parse(parser: _Parser, path: Path, file_size: int) -> GGUFHeader:
    p = str(path)
    buf = parser.buf
    buf.ensure(_HEADER.size)
    _magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf.data, 0)
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise ModelFileError(
                f"{p}: big-endian GGUF (version {swapped}); llama.cpp needs a little-endian file"
            )
        if version == 1:
            raise ModelFileError(
                f"{p}: GGUF version 1 is no longer supported by llama.cpp; "
                "download or convert a current GGUF (version 2 or 3)"
            )
        raise ModelFileError(
            f"{p}: unsupported GGUF version {version} (this app reads versions 2 and 3)"
        )
    parser.pos = _HEADER.size
    metadata = parser.metadata(n_kv)

    parser.where = "the metadata"
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        alignment = metadata["general.alignment"]
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise _Corrupt(f"general.alignment is {alignment!r}, not a power of two")

    tensors = parser.tensor_infos(n_tensors, alignment)
    parser.where = "the padding after the tensor infos"
    data_offset = -(-parser.pos // alignment) * alignment

    data_size = 0
    prev_end, prev_name = 0, ""
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.offset < prev_end:
            raise _Corrupt(f"tensors {prev_name!r} and {t.name!r} overlap")
        prev_end, prev_name = t.offset + t.n_bytes, t.name
        data_size = max(data_size, prev_end)
    if data_size >= 1 << 62:
        raise _Corrupt(f"the tensors claim {format_bytes(data_size)} of data")

    needed = data_offset + data_size
    if needed > file_size:
        if data_offset > file_size:
            raise _Truncated
        have, want = format_bytes(file_size - data_offset), format_bytes(data_size)
        if have == want:  # too close to tell apart when rounded
            have, want = f"{file_size - data_offset:,} bytes", f"{data_size:,} bytes"
        raise ModelFileError(
            f"{p}: truncated GGUF: tensor data needs {want} but the file has {have} "
            f"({format_bytes(needed - file_size)} missing; an interrupted download?)"
        )

    return GGUFHeader(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        data_offset=data_offset,
        data_size=data_size,
        file_size=file_size,
    )
