"""Read and check a GGUF file's header before llama.cpp ever sees the file.

llama.cpp can abort the whole process on a damaged model file, so everything a user can get
wrong (a missing path, a directory, an HTML error page saved as ``.gguf``, a partial download,
a corrupt header) is caught here first and reported as a one-line :class:`ModelFileError` whose
message starts with the file path.

Standard library only. The parsing itself is :mod:`localr1.models.gguf_parser` (fast on a
DeepSeek-R1 distill's 152k-token vocabulary: long arrays are skipped, as
:class:`~localr1.models.gguf_parser.GGUFArraySummary`), the type tables are
:mod:`localr1.models.gguf_types`, and the model's hyperparameters are checked against what
llama.cpp asserts on by :mod:`localr1.models.gguf_checks`. Tensor data is never read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from localr1.errors import ModelFileError
from localr1.models.gguf_checks import HyperparameterError, check_hyperparameters
from localr1.models.gguf_parser import (
    HEADER,
    Buffer,
    Corrupt,
    GGUFTensorInfo,
    Parser,
    Truncated,
)
from localr1.models.gguf_types import LLAMA_FTYPE_GUESSED, LLAMA_FTYPES
from localr1.sizes import format_bytes

__all__ = ["GGUFHeader", "read_gguf_header"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


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
        guessed = ftype & LLAMA_FTYPE_GUESSED
        base = ftype & ~LLAMA_FTYPE_GUESSED
        name = LLAMA_FTYPES.get(base, f"unknown file type {base}")
        return f"{name} (guessed)" if guessed else name

    @property
    def split_count(self) -> int:
        count = _as_int(self.metadata.get("split.count"))
        return count if count and count > 0 else 1


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
        _check_regular(p, os.stat(path).st_mode)
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{p}: no such file") from None
    except PermissionError:
        raise ModelFileError(f"{p}: permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ModelFileError(f"{p}: symlink loop (too many levels of symbolic links)") from None
        raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    try:
        _check_regular(p, st.st_mode)
    except ModelFileError:
        f.close()
        raise
    return f, st.st_size


def _check_regular(p: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise ModelFileError(f"{p}: is a directory, not a GGUF file")
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ModelFileError(f"{p}: not a regular file: {kind}")


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
            buf = Buffer(f, file_size)
            buf.ensure(min(file_size, 64))
        except OSError as e:
            raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
        except Truncated:  # the file shrank while we read it
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
        parser = Parser(buf)
        try:
            header = _parse(parser, path, file_size)
        except Truncated:
            raise ModelFileError(
                f"{p}: truncated GGUF: the file ends ({format_bytes(file_size)}) inside the "
                f"header, in {parser.where} (an interrupted download?)"
            ) from None
        except Corrupt as e:
            raise ModelFileError(f"{p}: corrupt GGUF header: {e} (in {parser.where})") from None
        except OSError as e:
            raise ModelFileError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        check_hyperparameters(header.metadata)
    except HyperparameterError as e:
        raise ModelFileError(f"{p}: unusable model: {e}") from None
    return header


def _parse(parser: Parser, path: Path, file_size: int) -> GGUFHeader:
    p = str(path)
    buf = parser.buf
    buf.ensure(HEADER.size)
    _magic, version, n_tensors, n_kv = HEADER.unpack_from(buf.data, 0)
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
    parser.pos = HEADER.size
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
            raise Corrupt(f"general.alignment is {alignment!r}, not a power of two")

    tensors = parser.tensor_infos(n_tensors, alignment)
    parser.where = "the padding after the tensor infos"
    data_offset = -(-parser.pos // alignment) * alignment

    data_size = 0
    prev_end, prev_name = 0, ""
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.offset < prev_end:
            raise Corrupt(f"tensors {prev_name!r} and {t.name!r} overlap")
        prev_end, prev_name = t.offset + t.n_bytes, t.name
        data_size = max(data_size, prev_end)
    if data_size >= 1 << 62:
        raise Corrupt(f"the tensors claim {format_bytes(data_size)} of data")

    needed = data_offset + data_size
    if needed > file_size:
        if data_offset > file_size:
            raise Truncated
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
