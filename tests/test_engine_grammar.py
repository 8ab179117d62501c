"""The answer grammar (GenerationParams.answer_grammar) in the Engine: the reasoning stays free,
the answer after </think> follows the grammar; a model that does not think follows it from its
first token."""

from __future__ import annotations

import json

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.answer_format import json_schema_grammar
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from tests.fixtures import scripted_models as sm

VERDICT = {"type": "object", "properties": {"verdict": {"enum": ["yes", "no"]}},
           "required": ["verdict"], "additionalProperties": False}
CITY = {"type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40},
                       "population_millions": {"type": "integer"}},
        "required": ["city", "population_millions"], "additionalProperties": False}


def turn(engine, prompt="hi", **params):
    events = list(engine.stream_chat([ChatMessage("user", prompt)], GenerationParams(**params)))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert isinstance(events[-1], TurnDone)
    return reasoning, answer, events[-1].stats


@pytest.fixture(scope="module")
def engines(r1_original_model, r1_prefill_model):
    with Engine.load(EngineConfig(r1_original_model, context_size=1024)) as original, \
            Engine.load(EngineConfig(r1_prefill_model, context_size=1024)) as prefill:
        yield {"original": original, "prefill": prefill}


@pytest.mark.parametrize("variant", ["original", "prefill"])
@pytest.mark.parametrize("temperature", [0.0, 0.6])
def test_the_reasoning_is_free_and_the_answer_follows_the_schema(engines, variant, temperature):
    reasoning, answer, stats = turn(engines[variant], answer_grammar=json_schema_grammar(VERDICT),
                                    temperature=temperature, seed=4, max_tokens=200)
    assert reasoning == sm.REASONING_TEXT  # the grammar never touched the think block
    assert json.loads(answer)["verdict"] in ("yes", "no")
    assert stats.finish_reason == "stop"  # a complete grammar allows only the end


def test_a_budget_closed_think_block_then_the_grammar(engines):
    reasoning, answer, stats = turn(engines["prefill"], reasoning_budget=3,
                                    answer_grammar=json_schema_grammar(VERDICT), seed=2)
    assert stats.reasoning_budget_hit and sm.REASONING_TEXT.startswith(reasoning)
    assert json.loads(answer)["verdict"] in ("yes", "no")


def test_no_thinking_gets_the_grammar_from_the_first_token(engines):
    reasoning, answer, _ = turn(engines["prefill"], reasoning_budget=0,
                                answer_grammar=json_schema_grammar(VERDICT), seed=2)
    assert reasoning == ""
    assert json.loads(answer)["verdict"] in ("yes", "no")


def test_without_a_grammar_the_answer_is_the_model_s_own(engines):
    _, answer, _ = turn(engines["prefill"])
    assert answer == sm.ANSWER_TEXT


def test_smollm2_answers_json_that_follows_the_schema(smollm2_model):
    # SmolLM2 has no think block: the grammar applies from its first token.
    with Engine.load(EngineConfig(smollm2_model, context_size=1024)) as engine:
        assert not engine.chat_format.is_r1
        _, answer, stats = turn(engine, "Name a large city and its population in millions, "
                                "as JSON.", answer_grammar=json_schema_grammar(CITY), seed=1,
                                temperature=0.0, max_tokens=120)
    data = json.loads(answer)
    assert set(data) == {"city", "population_millions"}
    assert isinstance(data["city"], str) and isinstance(data["population_millions"], int)
    assert stats.finish_reason == "stop"
