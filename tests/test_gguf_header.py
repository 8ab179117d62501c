"""Tests for the standard-library GGUF header reader, against files written by the gguf package."""

from __future__ import annotations

import gzip
import json
import os
import struct
import time
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import quantize

from localr1.errors import LocalR1Error, ModelFileError
from localr1.models import gguf_parser
from localr1.models.gguf_header import GGUFHeader, read_gguf_header
from localr1.models.gguf_parser import GGUFArraySummary
from localr1.models.gguf_types import GGML_TYPES, GGML_TYPES_REMOVED, LLAMA_FTYPES
from localr1.models.library import resolve_model
from localr1.sizes import format_bytes

FIXTURES = Path(__file__).parent / "fixtures"
QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType

CHAT_TEMPLATE = (
    "{% for m in messages %}<｜User｜>{{ m['content'] }}{% endfor %}<｜Assistant｜><think>\n"
)
BIG_STRINGS = [f"tok{i}-{'x' * (i % 37)}" for i in range(200_000)]


# --------------------------------------------------------------------------------------------
# helpers


def write_model(path: Path, *, big_array: bool = True, endianess=gguf.GGUFEndian.LITTLE) -> Path:
    """A small but realistic GGUF: metadata of every value type and tensors of several types."""
    w = gguf.GGUFWriter(str(path), "qwen2", endianess=endianess)
    w.add_name("Tiny R1 Distill")
    w.add_context_length(131072)
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_file_type(15)
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.5)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 1e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓")
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.floats", [0.25, -1.5])
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.strings", ["a", "", "ß✓"])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_array("test.nested_strings", [["a", "b"], ["c"]])
    if big_array:
        w.add_array("test.big_strings", BIG_STRINGS)
        w.add_key_value("test.big_ints", list(range(5000)), VT.ARRAY, sub_type=VT.INT32)

    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((16, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((8, 64)).astype(np.float16))
    q8 = quantize(rng.standard_normal((4, 64), dtype=np.float32), QT.Q8_0)
    w.add_tensor("blk.0.attn_k.weight", q8, raw_dtype=QT.Q8_0)
    q4k = np.zeros((3, 144), dtype=np.uint8)  # raw Q4_K blocks: 3 rows of 256 elements
    w.add_tensor("blk.0.ffn_up.weight", q4k, raw_dtype=QT.Q4_K)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(5, dtype=np.float32))  # 20 bytes: padded
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))  # 32 bytes: ends the file
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def reader(model: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(model)


def expect_error(path: Path, *words: str) -> str:
    """read_gguf_header(path) must raise a one-line ModelFileError naming path and a word."""
    with pytest.raises(ModelFileError) as info:
        read_gguf_header(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert any(w in message for w in words), message
    return message


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return (
        gstr(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<I", ggml_type)
        + struct.pack("<Q", offset)
    )


def raw_gguf(
    path: Path,
    kvs: list[bytes] = (),
    tensors: list[bytes] = (),
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    data: bytes = b"",
) -> Path:
    """A hand-made GGUF file, for damage the gguf writer refuses to produce."""
    n_kv = len(kvs) if n_kv is None else n_kv
    n_tensors = len(tensors) if n_tensors is None else n_tensors
    body = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs)
    body += b"".join(tensors)
    body += b"\0" * (-len(body) % 32) + data
    path.write_bytes(body)
    return path


# --------------------------------------------------------------------------------------------
# reading a good file


def test_metadata_reads_back(model: Path) -> None:
    h = read_gguf_header(model)
    assert isinstance(h, GGUFHeader)
    assert h.path == model
    assert h.version == 3
    m = h.metadata
    assert m["general.architecture"] == "qwen2"
    assert m["test.u8"] == 200
    assert m["test.i8"] == -100
    assert m["test.u16"] == 60000
    assert m["test.i16"] == -30000
    assert m["test.u32"] == 4_000_000_000
    assert m["test.i32"] == -2_000_000_000
    assert m["test.f32"] == 0.5
    assert m["test.u64"] == 2**63 + 5
    assert m["test.i64"] == -(2**62)
    assert m["test.f64"] == 1e-300
    assert m["test.bool"] is True
    assert m["test.string"] == "héllo ✓"
    assert m["test.ints"] == [1, 2, 3]
    assert m["test.floats"] == [0.25, -1.5]
    assert m["test.bools"] == [True, False, True]
    assert m["test.strings"] == ["a", "", "ß✓"]
    assert m["test.nested"] == [[1, 2], [3, 4, 5]]
    assert m["test.nested_strings"] == [["a", "b"], ["c"]]
    assert m["test.big_strings"] == GGUFArraySummary(item_type=8, length=200_000)
    assert m["test.big_ints"] == GGUFArraySummary(item_type=5, length=5000)
    assert len(m["test.big_strings"]) == 200_000


def test_metadata_matches_gguf_reader(model: Path, reader: gguf.GGUFReader) -> None:
    h = read_gguf_header(model)
    assert set(h.metadata) == {k for k in reader.fields if not k.startswith("GGUF.")}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or isinstance(h.metadata[key], GGUFArraySummary):
            continue
        if key.startswith("test.nested"):  # GGUFReader.contents() flattens nested arrays
            continue
        expected = field.contents()
        if isinstance(expected, float):
            assert h.metadata[key] == pytest.approx(expected)
        else:
            assert h.metadata[key] == expected, key


def test_properties(model: Path) -> None:
    h = read_gguf_header(model)
    assert h.architecture == "qwen2"
    assert h.name == "Tiny R1 Distill"
    assert h.chat_template == CHAT_TEMPLATE
    assert h.context_length == 131072
    assert h.block_count == 2
    assert h.embedding_length == 64
    assert h.head_count == 4
    assert h.head_count_kv == 2
    assert h.key_length == 16
    assert h.value_length == 16
    assert h.file_type == "Q4_K_M"
    assert h.split_count == 1
    assert h.parameter_count == 16 * 64 + 8 * 64 + 4 * 64 + 3 * 256 + 5 + 8


def test_properties_absent_and_fallbacks(tmp_path: Path) -> None:
    path = raw_gguf(
        tmp_path / "bare.gguf",
        [
            # deepseek2 (MLA) really has a key head (192) larger than its value head (128).
            kv("general.architecture", 8, gstr("deepseek2")),
            kv("deepseek2.embedding_length", 4, struct.pack("<I", 4096)),
            kv("deepseek2.attention.head_count", 4, struct.pack("<I", 32)),
            kv("deepseek2.attention.key_length", 4, struct.pack("<I", 192)),
            kv("general.file_type", 4, struct.pack("<I", 7 | 1024)),
            kv("split.count", 2, struct.pack("<H", 3)),
        ],
    )
    h = read_gguf_header(path)
    assert h.name is None
    assert h.chat_template is None
    assert h.context_length is None
    assert h.block_count is None
    assert h.head_count_kv == 32  # falls back to head_count
    assert h.key_length == 192
    assert h.value_length == 128  # embedding_length // head_count
    assert h.file_type == "Q8_0 (guessed)"
    assert h.split_count == 3
    assert h.parameter_count == 0
    assert h.tensors == ()
    assert h.data_size == 0
    assert h.data_offset + h.data_size == h.file_size

    empty = read_gguf_header(raw_gguf(tmp_path / "empty-header.gguf"))
    assert empty.metadata == {}
    assert empty.architecture is None
    assert empty.embedding_length is None
    assert empty.key_length is None
    assert empty.head_count_kv is None
    assert empty.file_type is None


@pytest.mark.parametrize(
    ("ftype", "name"), [(15, "Q4_K_M"), (7, "Q8_0"), (18, "Q6_K"), (1, "F16"), (0, "F32")]
)
def test_file_type_names(tmp_path: Path, ftype: int, name: str) -> None:
    path = raw_gguf(tmp_path / "f.gguf", [kv("general.file_type", 4, struct.pack("<I", ftype))])
    assert read_gguf_header(path).file_type == name


def test_tensors_match_gguf_reader(model: Path, reader: gguf.GGUFReader) -> None:
    h = read_gguf_header(model)
    assert h.data_offset == reader.data_offset
    assert [t.name for t in h.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(h.tensors, reader.tensors, strict=True):
        assert list(ours.shape) == [int(d) for d in theirs.shape]
        assert ours.ggml_type == int(theirs.tensor_type)
        assert ours.type_name == theirs.tensor_type.name
        assert ours.n_bytes == theirs.n_bytes
        assert ours.n_elements == theirs.n_elements
        assert h.data_offset + ours.offset == theirs.data_offset
    by_name = {t.name: t for t in h.tensors}
    assert by_name["token_embd.weight"].shape == (64, 16)
    assert by_name["token_embd.weight"].type_name == "F32"
    assert by_name["blk.0.attn_q.weight"].type_name == "F16"
    assert by_name["blk.0.attn_k.weight"].type_name == "Q8_0"
    assert by_name["blk.0.attn_k.weight"].n_bytes == 4 * 2 * 34
    assert by_name["blk.0.ffn_up.weight"].shape == (256, 3)
    assert by_name["blk.0.ffn_up.weight"].n_bytes == 3 * 144


def test_data_fills_fresh_file(model: Path) -> None:
    h = read_gguf_header(model)
    assert h.file_size == model.stat().st_size
    assert h.data_offset % 32 == 0
    assert h.data_offset + h.data_size == h.file_size


def test_custom_alignment(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "a.gguf"), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.ones(3, dtype=np.float32))
    w.add_tensor("b", np.ones(16, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = read_gguf_header(tmp_path / "a.gguf")
    assert h.data_offset % 64 == 0
    assert [t.offset for t in h.tensors] == [0, 64]
    assert h.data_offset == gguf.GGUFReader(tmp_path / "a.gguf").data_offset
    assert h.data_offset + h.data_size == h.file_size


def test_version_2(tmp_path: Path) -> None:
    path = raw_gguf(
        tmp_path / "v2.gguf",
        [kv("general.architecture", 8, gstr("llama"))],
        [tinfo("w", (32,), 0, 0)],
        version=2,
        data=b"\0" * 128,
    )
    h = read_gguf_header(path)
    assert h.version == 2
    assert h.data_size == 128


@pytest.mark.parametrize("initial_read", [1, 100, 4096, 1 << 20])
def test_small_read_buffer_gives_same_result(
    model: Path, monkeypatch: pytest.MonkeyPatch, initial_read: int
) -> None:
    """Headers longer than the first read (the buffer grows) parse the same."""
    expected = read_gguf_header(model)
    monkeypatch.setattr(gguf_parser, "INITIAL_READ", initial_read)
    assert read_gguf_header(model) == expected


# --------------------------------------------------------------------------------------------
# truncated files


def truncate_copy(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def cut_points(model: Path) -> dict[str, int]:
    raw = model.read_bytes()
    h = read_gguf_header(model)
    first_tensor_name = raw.rindex(gstr("token_embd.weight"), 0, h.data_offset)
    return {
        "one byte short": len(raw) - 1,
        "middle of the data": h.data_offset + h.data_size // 2,
        "at the data start": h.data_offset,
        "in the padding before the data": h.data_offset - 1,
        "in the tensor infos": first_tensor_name + 30,
        "in a tensor name": first_tensor_name + 10,
        "in the big string array": raw.index(b"tok100000-"),
        "in a string length": raw.index(b"tok100000-") - 3,
        "in a metadata key": raw.index(b"test.u16") + 4,
        "in the chat template": raw.index(b"<think>"),
        "in the KV count": 20,
        "in the magic": 3,
        "after the magic": 4,
    }


@pytest.mark.parametrize("initial_read", [gguf_parser.INITIAL_READ, 64])
def test_truncated_files(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, initial_read: int
) -> None:
    monkeypatch.setattr(gguf_parser, "INITIAL_READ", initial_read)
    for where, size in cut_points(model).items():
        path = truncate_copy(model, tmp_path / f"cut-{size}.gguf", size)
        message = expect_error(path, "truncated", "corrupt")
        assert "truncated" in message, (where, message)


def test_truncated_data_message(model: Path, tmp_path: Path) -> None:
    h = read_gguf_header(model)
    path = truncate_copy(model, tmp_path / "half.gguf", h.data_offset + h.data_size // 2)
    message = expect_error(path, "truncated")
    assert "tensor data needs" in message
    assert "interrupted download" in message

    path = truncate_copy(model, tmp_path / "short1.gguf", h.file_size - 1)
    message = expect_error(path, "truncated")
    assert "1 byte missing" in message


def test_truncated_big_file_message(tmp_path: Path) -> None:
    """Sizes are human readable: a 4.1 GB model cut at 2 GB (a sparse file, nothing written)."""
    n = 4_100_000_000 // 4
    path = raw_gguf(tmp_path / "big.gguf", [], [tinfo("w", (n,), 0, 0)])
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + 2_000_000_000)
    message = expect_error(path, "truncated")
    assert "tensor data needs 4.1 GB but the file has 2.0 GB" in message


# --------------------------------------------------------------------------------------------
# not a usable file at all


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.gguf", "no such file")


def test_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, "directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_is_not_a_regular_file_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)  # no writer: opening it for reading in blocking mode would hang
    assert expect_error(fifo, "not a regular file").endswith("a named pipe (FIFO)")
    assert resolve_model(str(fifo), tmp_path / "models") == fifo  # not "no such file"


def test_symlink_loop(tmp_path: Path) -> None:
    loop = tmp_path / "x.gguf"
    loop.symlink_to(tmp_path / "y.gguf")
    (tmp_path / "y.gguf").symlink_to(loop)
    assert "symlink loop" in expect_error(loop, "symlink loop")
    assert resolve_model(str(loop), tmp_path / "models") == loop
    dangling = tmp_path / "gone.gguf"
    dangling.symlink_to(tmp_path / "nowhere.gguf")
    expect_error(dangling, "no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_errors_are_localr1_errors(tmp_path: Path) -> None:
    with pytest.raises(LocalR1Error):
        read_gguf_header(tmp_path / "nope.gguf")


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGML" + b"\0" * 100)
    message = expect_error(path, "not a GGUF file")
    assert "b'GGML'" in message


def test_zip_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"x" * 100)
    message = expect_error(path, "not a GGUF file")
    assert "starts with b'PK\\x03\\x04'" in message


def test_html_error_page(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    message = expect_error(path, "not a GGUF file")
    assert "web page" in message


def test_git_lfs_pointer(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    assert "git lfs pull" in expect_error(path, "not a GGUF file")


@pytest.mark.parametrize("version", [1, 99, 0])
def test_unsupported_versions(model: Path, tmp_path: Path, version: int) -> None:
    raw = bytearray(model.read_bytes())
    raw[4:8] = struct.pack("<I", version)
    path = tmp_path / f"v{version}.gguf"
    path.write_bytes(raw)
    message = expect_error(path, "version")
    assert f"version {version}" in message


def test_big_endian(tmp_path: Path) -> None:
    path = write_model(tmp_path / "be.gguf", big_array=False, endianess=gguf.GGUFEndian.BIG)
    expect_error(path, "big-endian")


# --------------------------------------------------------------------------------------------
# corrupt headers


def test_unknown_value_type(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "t.gguf", [kv("general.name", 42, b"\0" * 16)])
    message = expect_error(path, "corrupt")
    assert "unknown value type 42" in message
    assert "general.name" in message


def test_unknown_array_item_type(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "t.gguf", [kv("x", 9, struct.pack("<IQ", 13, 2) + b"\0" * 16)])
    assert "unknown array item type 13" in expect_error(path, "corrupt")


@pytest.mark.parametrize(("offset", "what"), [(16, "metadata"), (8, "tensor")])
def test_absurd_counts(model: Path, tmp_path: Path, offset: int, what: str) -> None:
    raw = bytearray(model.read_bytes())
    raw[offset : offset + 8] = struct.pack("<Q", 2**60)
    path = tmp_path / "absurd.gguf"
    path.write_bytes(raw)
    message = expect_error(path, "corrupt")
    assert what in message


def test_absurd_string_length(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "s.gguf", [struct.pack("<Q", 2**62) + b"key"])
    expect_error(path, "corrupt")
    path = raw_gguf(tmp_path / "v.gguf", [kv("k", 8, struct.pack("<Q", 2**40) + b"abc")])
    expect_error(path, "corrupt")


def test_absurd_length_in_big_string_array(tmp_path: Path) -> None:
    items = b"".join(gstr(f"t{i}") for i in range(2000)) + struct.pack("<Q", 2**50) + b"x" * 64
    path = raw_gguf(tmp_path / "a.gguf", [kv("tokens", 9, struct.pack("<IQ", 8, 3000) + items)])
    expect_error(path, "corrupt")


def test_absurd_array_length(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "a.gguf", [kv("x", 9, struct.pack("<IQ", 12, 2**61))])
    expect_error(path, "corrupt")


def test_deeply_nested_arrays(tmp_path: Path) -> None:
    payload = struct.pack("<IQ", 9, 1) * 50 + struct.pack("<IQ", 0, 0)
    path = raw_gguf(tmp_path / "n.gguf", [kv("x", 9, payload)])
    expect_error(path, "corrupt")


def test_duplicate_key(tmp_path: Path) -> None:
    entry = kv("general.name", 8, gstr("a"))
    assert "duplicate" in expect_error(raw_gguf(tmp_path / "d.gguf", [entry, entry]), "corrupt")


def test_unknown_ggml_type(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "u.gguf", [], [tinfo("w", (32,), 99, 0)], data=b"\0" * 64)
    assert "unknown ggml type 99" in expect_error(path, "corrupt")


def test_removed_ggml_type(tmp_path: Path) -> None:
    path = raw_gguf(tmp_path / "r.gguf", [], [tinfo("w", (32,), 31, 0)], data=b"\0" * 64)
    assert "Q4_0_4_4" in expect_error(path, "corrupt")


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ([tinfo("w", (1, 2, 3, 4, 5), 0, 0)], "dimensions"),
        ([tinfo("w", (48,), 8, 0)], "block size"),
        ([tinfo("w", (8,), 0, 4)], "aligned"),
        ([tinfo("w", (64,), 0, 0), tinfo("v", (8,), 0, 128)], "overlap"),
        ([tinfo("w", (8,), 0, 0), tinfo("w", (8,), 0, 32)], "duplicate tensor"),
        ([tinfo("x" * 64, (8,), 0, 0)], "name"),
        ([tinfo("w", (2**40, 2**40), 0, 0)], "impossible shape"),
        ([tinfo("w", (8,), 0, 2**62)], "claim"),
    ],
)
def test_bad_tensor_infos(tmp_path: Path, tensors: list[bytes], words: str) -> None:
    path = raw_gguf(tmp_path / "t.gguf", [], tensors, data=b"\0" * 1024)
    assert words in expect_error(path, "corrupt")


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_bad_alignment(tmp_path: Path, alignment: int) -> None:
    path = raw_gguf(tmp_path / "a.gguf", [kv("general.alignment", 4, struct.pack("<I", alignment))])
    assert "alignment" in expect_error(path, "corrupt")


# --------------------------------------------------------------------------------------------
# tables


# gguf-py still sizes Q8_1 blocks with float d and s (4 + 4 + 32); ggml's block_q8_1 has been
# two ggml_half plus 32 quants (static_assert in ggml-common.h) for a long time.  Q8_1 is an
# activation format that never appears in model files.
STALE_IN_GGUF_PY = {"Q8_1": ((32, 40), (32, 36))}


def test_type_table_matches_gguf() -> None:
    ours = GGML_TYPES | GGML_TYPES_REMOVED
    for qtype, (block, type_size) in gguf.GGML_QUANT_SIZES.items():
        assert int(qtype) in GGML_TYPES, f"{qtype.name} missing from GGML_TYPES"
        if qtype.name in STALE_IN_GGUF_PY and (block, type_size) == STALE_IN_GGUF_PY[qtype.name][0]:
            block, type_size = STALE_IN_GGUF_PY[qtype.name][1]
        assert ours[int(qtype)] == (qtype.name, block, type_size)
    known = {int(q) for q in gguf.GGML_QUANT_SIZES}
    assert not known & set(GGML_TYPES_REMOVED)


def test_file_type_table_matches_gguf() -> None:
    for ftype in gguf.LlamaFileType:
        if ftype == gguf.LlamaFileType.GUESSED:
            continue
        expected = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert LLAMA_FTYPES[int(ftype)] == expected


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 bytes"
    assert format_bytes(1) == "1 byte"
    assert format_bytes(999) == "999 bytes"
    assert format_bytes(1000) == "1.0 KB"
    assert format_bytes(4_100_000_000) == "4.1 GB"
    assert format_bytes(999_960_000) == "1.0 GB"
    assert format_bytes(5 * 10**15) == "5.0 PB"


# --------------------------------------------------------------------------------------------
# speed on an R1-sized vocabulary


def test_r1_sized_header_is_fast(tmp_path: Path) -> None:
    with gzip.open(FIXTURES / "deepseek-r1-distill-qwen-tokenizer.json.gz", "rt") as f:
        tok = json.load(f)
    assert len(tok["tokenizer.ggml.tokens"]) == 152_064
    assert len(tok["tokenizer.ggml.merges"]) == 151_387
    path = tmp_path / "r1.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_tokenizer_model(tok["tokenizer.ggml.model"])
    w.add_tokenizer_pre(tok["tokenizer.ggml.pre"])
    w.add_token_list(tok["tokenizer.ggml.tokens"])
    w.add_token_types(tok["tokenizer.ggml.token_type"])
    w.add_token_merges(tok["tokenizer.ggml.merges"])
    w.add_bos_token_id(tok["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(tok["tokenizer.ggml.eos_token_id"])
    w.add_chat_template(tok["tokenizer.chat_template"])
    w.add_tensor("output_norm.weight", np.ones(1536, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        h = read_gguf_header(path)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"{best:.3f} s"
    assert h.metadata["tokenizer.ggml.tokens"] == GGUFArraySummary(8, 152_064)
    assert h.metadata["tokenizer.ggml.token_type"] == GGUFArraySummary(5, 152_064)
    assert h.metadata["tokenizer.ggml.merges"] == GGUFArraySummary(8, 151_387)
    assert h.metadata["tokenizer.ggml.bos_token_id"] == 151646
    assert h.chat_template == tok["tokenizer.chat_template"]
    assert h.data_offset + h.data_size == h.file_size
