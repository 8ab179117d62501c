"""The model catalog: shipped entries, names, the user's overrides, and file:line:column errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from localr1.errors import ConfigError
from localr1.models.catalog import UnknownModelError, load_catalog, shipped_catalog_path

ROOT = Path(__file__).resolve().parents[1]

DISTILLS = {  # name: (model in the file names, architecture, layers, kv heads)
    "r1:1.5b": ("Qwen-1.5B", "qwen2", 28, 2),
    "r1:7b": ("Qwen-7B", "qwen2", 28, 4),
    "r1:8b": ("Llama-8B", "llama", 32, 8),
    "r1:14b": ("Qwen-14B", "qwen2", 48, 8),
    "r1:32b": ("Qwen-32B", "qwen2", 64, 8),
    "r1:70b": ("Llama-70B", "llama", 80, 8),
}


@pytest.fixture()
def catalog():
    return load_catalog(user_file=Path("/nonexistent/models.toml"))


def test_every_distill_in_three_quants_from_bartowski(catalog):
    for name, (model, arch, layers, kv_heads) in DISTILLS.items():
        for quant in ("Q4_K_M", "Q6_K", "Q8_0"):
            entry = catalog.get(f"{name}-{quant.lower()}")
            assert entry.repo == f"bartowski/DeepSeek-R1-Distill-{model}-GGUF"
            stem = f"DeepSeek-R1-Distill-{model}-{quant}"
            if len(entry.files) == 1:
                assert entry.files == (f"{stem}.gguf",)
            else:  # split over the Hub's 50 GB limit: parts in a sub-folder
                assert entry.files == tuple(f"{stem}/{stem}-0000{i}-of-00002.gguf"
                                            for i in (1, 2))
            m = entry.model
            assert (m.architecture, m.n_layers, m.n_kv_heads, m.head_dim) == \
                (arch, layers, kv_heads, 128)
            assert m.context_length == 131072
            assert m.license.startswith("MIT")
            assert ("Llama" in m.license) == (arch == "llama")
            assert (m.temperature, m.top_p) == (0.6, 0.95)
            assert m.parameters.endswith("B")
            assert 0.5e9 < entry.size_bytes < 80e9
    assert len(catalog.get("r1:70b-q8_0").files) == 2


def test_sizes_grow_with_quant_and_model(catalog):
    sizes = [[catalog.get(f"{n}-{q}").size_bytes for q in ("q4_k_m", "q6_k", "q8_0")]
             for n in DISTILLS]
    for row in sizes:
        assert row == sorted(row)
    assert [row[0] for row in sizes] == sorted(row[0] for row in sizes)


def test_names_like_ollama(catalog):
    assert catalog.get("r1").name == "r1:1.5b-q4_k_m"  # r1 alone is the default model
    assert catalog.get("r1:7b").name == "r1:7b-q4_k_m"  # the default quant
    assert catalog.get("r1:70b").quant.quant == "Q4_K_M"
    assert catalog.get("R1:7B-Q8_0").name == "r1:7b-q8_0"
    assert catalog.get("r1:7b").is_default_quant and not catalog.get("r1:7b-q8_0").is_default_quant
    assert {"r1", "r1:7b", "r1:7b-q6_k"} <= set(catalog.names())
    assert catalog.find("r1:9b") is None


def test_unknown_name_lists_the_nearest(catalog):
    with pytest.raises(UnknownModelError,
                       match=r"^unknown model 'r1:7b-q5'; did you mean .*r1:7b-q6_k.*\?$"):
        catalog.get("r1:7b-q5")


def test_the_packaged_catalog_is_the_repository_one():
    packaged = resources.files("localr1").joinpath("models.toml").read_text(encoding="utf-8")
    assert packaged == (ROOT / "models.toml").read_text(encoding="utf-8")
    assert shipped_catalog_path().read_text(encoding="utf-8") == packaged


def write_user_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_catalog_adds_and_overrides(tmp_path):
    user = write_user_catalog(tmp_path, """
[aliases]
r1 = "r1:7b"
qwq = "qwq:32b"

[models."r1:7b"]
default_quant = "Q5_K_M"
quants.Q5_K_M = { size_gb = 5.4, file = "DeepSeek-R1-Distill-Qwen-7B-Q5_K_M.gguf" }

[models."qwq:32b"]
repo = "someone/QwQ-32B-GGUF"
parameters = "32.8B"
architecture = "qwen2"
context_length = 32768
license = "Apache-2.0"
layers = 64
kv_heads = 8
head_dim = 128
default_quant = "Q4_K_M"
quants.Q4_K_M = { size_gb = 19.9, file = "QwQ-32B-Q4_K_M.gguf" }
""")
    catalog = load_catalog(user_file=user)
    assert catalog.get("r1").name == "r1:7b-q5_k_m"
    assert catalog.get("r1:7b-q8_0").files == ("DeepSeek-R1-Distill-Qwen-7B-Q8_0.gguf",)
    assert catalog.get("qwq").name == "qwq:32b-q4_k_m"
    assert catalog.get("qwq").model.temperature == 0.6  # R1's sampling unless told otherwise
    assert catalog.sources == (shipped_catalog_path(), user)


def test_user_catalog_in_the_config_dir_is_read_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALR1_HOME", str(tmp_path))
    write_user_catalog(tmp_path, '[aliases]\nr1 = "r1:14b"\n')
    assert load_catalog().get("r1").name == "r1:14b-q4_k_m"


@pytest.mark.parametrize(("text", "where", "message"), [
    ('[models."x:1b"]\nrepo = "a/b"\nlayers = \n', "3:10", "Invalid value"),
    ('[models."r1:7b"]\nlayers = "many"\n', "2:1", "'layers' must be an integer, not str"),
    ('[models."r1:7b"]\nquants.Q4_K_M = { size_gb = "big", file = "a.gguf" }\n', "2:19",
     "'size_gb' must be a number"),
    ('[models."r1:7b"]\nflavour = "mint"\n', "2:1", "unknown key 'flavour' in model 'r1:7b'"),
    ('\n[models."new:1b"]\nrepo = "a/b"\n', "2:1", "model 'new:1b' needs 'parameters'"),
    ('[models."r1:7b"]\ndefault_quant = "Q2_K"\n', "2:1",
     "default_quant 'Q2_K' is not one of the quants"),
    ('[aliases]\n\nfast = "r1:3b"\n', "3:1", "alias 'fast' points at unknown model 'r1:3b'"),
    ('[models."r1:7b"]\nquants.Q3 = { size_gb = 1 }\n', "2:1", "needs exactly one of 'file'"),
    ('[models."r1:7b"]\nrepo = "no-owner"\n', "2:1", "'repo' must be \"owner/name\""),
    ('[models."R1 7B"]\n', "1:1", "bad model name 'R1 7B'"),
    ('colour = "blue"\n', "1:1", "unknown key 'colour'"),
])
def test_mistakes_name_file_line_and_column(tmp_path, text, where, message):
    user = write_user_catalog(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_catalog(user_file=user)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{user}:{where}: "), text
    assert message in text
