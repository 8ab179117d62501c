"""Which model answers (/v1/models, swaps, --no-swap) and --log."""

from __future__ import annotations

import openai
import pytest

from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.serve.conftest import http, install

HI = [{"role": "user", "content": "hi"}]


def test_models_lists_installed_and_a_request_swaps_models(serve, models_dir, r1_prefill_model,
                                                          r1_original_model):
    first = install(r1_prefill_model, models_dir, "tiny-prefill")
    install(r1_original_model, models_dir, "tiny-original")
    running = serve(first, name="tiny-prefill")
    client = running.client()
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "tiny-prefill" and set(ids) == {"tiny-prefill", "tiny-original"}
    reply = client.chat.completions.create(model="tiny-original", messages=HI)
    assert reply.model == "tiny-original"
    assert reply.choices[0].message.content == sm.ANSWER_TEXT
    status, health = http("GET", f"{running.base_url}/health")
    assert health["model"] == "tiny-original"
    reply = client.chat.completions.create(model="tiny-prefill", messages=HI)  # and back
    assert reply.model == "tiny-prefill"
    assert reply.choices[0].message.model_extra["reasoning"] == sm.REASONING_TEXT


def test_no_swap_refuses_other_models_clearly(serve, models_dir, r1_prefill_model,
                                              r1_original_model):
    first = install(r1_prefill_model, models_dir, "tiny-prefill")
    install(r1_original_model, models_dir, "tiny-original")
    client = serve(first, name="tiny-prefill", allow_swap=False).client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-original", messages=HI)
    assert caught.value.body["code"] == "model_not_loaded"
    assert "--no-swap" in caught.value.body["message"]
    assert client.chat.completions.create(model="tiny-prefill", messages=HI).model == \
        "tiny-prefill"


def test_log_saves_each_chat_tagged_with_the_user(serve, r1_prefill_model):
    client = serve(r1_prefill_model, log=True).client()
    client.chat.completions.create(
        model=r1_prefill_model.stem, user="alice",
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "Hi.", "reasoning_content": "old"},
                  {"role": "user", "content": "hi"}])
    store = Store.open(app_paths().db_path)
    [conversation] = store.list_conversations()
    assert conversation.params == {"source": "serve", "user": "alice"}
    assert conversation.system_prompt == "Be brief."
    messages = store.branch(conversation.id)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "hello"), ("assistant", "Hi."), ("user", "hi"),
        ("assistant", sm.ANSWER_TEXT)]
    assert messages[-1].reasoning == sm.REASONING_TEXT


def test_without_log_nothing_is_saved(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    client.chat.completions.create(model=r1_prefill_model.stem, messages=HI)
    assert not app_paths().db_path.exists()


@pytest.mark.parametrize("alias", ["r1", "r1:1.5b", "R1:1.5B-Q4_K_M"])
def test_a_catalog_alias_names_the_pulled_model(serve, models_dir, r1_prefill_model,
                                                r1_original_model, alias):
    from localr1.models.library import build_model
    from localr1.models.registry import ModelRegistry

    # What `localr1 pull r1` leaves: the catalog's full name in the registry.
    ModelRegistry.default().put(build_model("r1:1.5b-q4_k_m", (r1_original_model,),
                                            source="pull", owned=False))
    first = install(r1_prefill_model, models_dir, "tiny-prefill")
    client = serve(first, name="tiny-prefill").client()
    assert "r1:1.5b-q4_k_m" in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model=alias, messages=HI)
    assert reply.model == "r1:1.5b-q4_k_m"
    assert reply.choices[0].message.content == sm.ANSWER_TEXT
