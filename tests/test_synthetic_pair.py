"""bench/synthetic_pair.py's construction, on small copies (the real target is 1 GB): the
target thinks the cycle without end, the partial draft is wrong exactly where designed."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_pair as pair  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")

PROMPT = "<｜User｜>hi<｜Assistant｜><think>\n"
CYCLE_IDS = [token_id for _, token_id in pair.CYCLE]


def predictions(path: Path, text: list[int]) -> list[int]:
    """The model's greedy next token after the prompt and after each token of `text`."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    llm.eval(prompt + text)
    logits = np.asarray(llm.scores[len(prompt) - 1:len(prompt) + len(text)])
    return logits.argmax(axis=1).tolist()


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    # Two wide-FFN layers stand in for the target's eight: same construction, a small file.
    target = folder / "target.gguf"
    pair.write_model(target, n_layers=2, n_ff=256, mistakes=False)
    partial = folder / "partial.gguf"
    pair.write_model(partial, n_layers=1, n_ff=pair.DRAFT_FF, mistakes=True)
    return target, partial


def test_the_target_follows_the_cycle_without_end(small_models):
    target, _ = small_models
    text = [CYCLE_IDS[i % pair.CYCLE_LENGTH] for i in range(2 * pair.CYCLE_LENGTH)]
    assert predictions(target, text) == [*text, text[0]]


def test_the_partial_draft_is_wrong_on_every_11th_token_only(small_models):
    _, partial = small_models
    text = [CYCLE_IDS[i % pair.CYCLE_LENGTH] for i in range(2 * pair.CYCLE_LENGTH)]
    predicted = predictions(partial, text)[:-1]
    wrong = [position for position, (got, want) in enumerate(zip(predicted, text, strict=True))
             if got != want]
    assert wrong == [p for p in range(len(text)) if p % pair.MISTAKE_PERIOD == 10]
    assert {predicted[p] for p in wrong} == {pair.MISTAKE_TOKEN}


def test_the_designed_acceptance():
    assert pair.expected_acceptance("full", 16) == 1.0
    assert pair.expected_acceptance("partial", 16) == 10 / 16
