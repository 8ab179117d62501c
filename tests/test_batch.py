"""`localr1 batch`: JSONL/text in, JSONL out, resume, bad lines, parallel decoding, --save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from localr1.batch import read_items, record_seed
from localr1.errors import LocalR1Error
from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.fixtures.scripted_models import build_scripted_model


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=300)


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_in_jsonl_out_with_bad_lines(tmp_path, r1_prefill_model):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "hi"}\n'
                      "not json at all\n"
                      '{"id": "b"}\n'
                      '{"id": "c", "messages": [{"role": "user", "content": "hey"}], '
                      '"system": "Be nice.", "params": {"temperature": 0.2}}\n'
                      '{"id": "d", "prompt": "x", "params": {"colour": 1}}\n')
    result = localr1("batch", source, "-m", r1_prefill_model)
    assert result.returncode == 1  # some records failed
    out = {r["line"] if r["id"] is None else r["id"]: r for r in records(result.stdout)}
    assert out["a"]["answer"] == sm.ANSWER_TEXT and out["a"]["reasoning"] == sm.REASONING_TEXT
    assert out["a"]["error"] is None and out["a"]["finish_reason"] == "stop"
    assert set(out["a"]["usage"]) == {"prompt_tokens", "completion_tokens", "reasoning_tokens"}
    assert set(out["a"]["timings"]) == {"ttft_ms", "tokens_per_second", "seconds"}
    assert out["c"]["answer"] == sm.ANSWER_TEXT
    assert "line 2: not valid JSON" in out[2]["error"]
    assert "line 3: no prompt" in out["b"]["error"]
    assert "unknown: colour" in out["d"]["error"]
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("batch: 2 done, 3 failed, 0 skipped")


def test_text_input_from_stdin_to_stdout(r1_original_model):
    result = localr1("batch", "-m", r1_original_model, input="first question\n\nsecond one\n")
    assert result.returncode == 0, result.stderr
    out = records(result.stdout)
    assert sorted(r["id"] for r in out) == [1, 3]  # ids are line numbers
    assert all(r["answer"] == sm.ANSWER_TEXT for r in out)
    assert "batch: 2 done, 0 failed" in result.stderr


def test_duplicate_ids_stop_before_anything_runs(tmp_path, r1_prefill_model):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"},
                                                 {"id": 1, "prompt": "b"}])
    output = tmp_path / "out.jsonl"
    result = localr1("batch", source, "-o", output, "-m", r1_prefill_model)
    assert result.returncode == 1
    assert "duplicate id 1 on lines 1 and 2" in result.stderr
    assert not output.exists()


def test_resume_skips_answered_ids_and_appends(tmp_path, r1_prefill_model):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(3)])
    output = tmp_path / "out.jsonl"
    assert localr1("batch", source, "-o", output, "-m", r1_prefill_model).returncode == 0
    with open(output, "a") as f:
        f.write('{"id": 99, "answer": "cut sh')  # a record a kill cut short
    write_jsonl(source, [{"id": i, "prompt": f"q{i}"} for i in range(5)])
    again = localr1("batch", source, "-o", output, "-m", r1_prefill_model)
    assert again.returncode == 0, again.stderr
    assert "2 done, 0 failed, 3 skipped" in again.stderr
    ids = [r["id"] for r in records(output.read_text())]
    assert sorted(ids) == [0, 1, 2, 3, 4]


def test_resume_does_not_repeat_bad_line_records(tmp_path, r1_prefill_model):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "q1", "prompt": "hi"}\n'
                      "not json\n"
                      '{"id": "q2"}\n')
    output = tmp_path / "out.jsonl"
    first = localr1("batch", source, "-o", output, "-m", r1_prefill_model)
    assert first.returncode == 1 and "1 done, 2 failed, 0 skipped" in first.stderr
    written = output.read_text()
    again = localr1("batch", source, "-o", output, "-m", r1_prefill_model)
    assert again.returncode == 0, again.stderr  # nothing new failed
    assert "0 done, 0 failed, 3 skipped" in again.stderr
    assert output.read_text() == written
    # A line that changed is a new input: its new error is written.
    source.write_text('{"id": "q1", "prompt": "hi"}\n'
                      "[1, 2]\n"
                      '{"id": "q2"}\n')
    changed = localr1("batch", source, "-o", output, "-m", r1_prefill_model)
    assert "0 done, 1 failed, 2 skipped" in changed.stderr
    assert [r["line"] for r in records(output.read_text()) if r["error"]] == [2, 3, 2]


@pytest.fixture(scope="module")
def long_loop_model(tmp_path_factory):
    return build_scripted_model(tmp_path_factory.mktemp("loop8k") / "loop.gguf", "loop",
                                context_length=8192)


def test_kill_9_loses_at_most_the_records_in_flight(tmp_path, long_loop_model):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(40)])
    output = tmp_path / "out.jsonl"
    args = ["batch", source, "-o", output, "-m", long_loop_model, "--threads", "1",
            "--reasoning-budget", "20", "--max-tokens", "120"]
    process = subprocess.Popen([sys.executable, "-m", "localr1", *map(str, args)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if output.exists() and len(output.read_text().splitlines()) >= 3:
            break
    assert process.poll() is None, "the batch finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = records(output.read_text().rsplit("\n", 1)[0])
    assert 3 <= len(written) < 40
    result = localr1(*args)
    assert result.returncode == 0, result.stderr
    final = records(output.read_text())
    assert sorted(r["id"] for r in final) == list(range(40))  # each exactly once
    assert all(r["error"] is None and r["answer"] for r in final)


@pytest.mark.parametrize("fixture", ["r1_original_model", "r1_prefill_model"])
def test_parallel_equals_sequential_on_scripted_models(tmp_path, fixture, request):
    model = request.getfixturevalue(fixture)
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": i, "prompt": "word " * (i * 7 + 1)} for i in range(9)])
    outputs = {}
    for parallel in (1, 4):
        result = localr1("batch", source, "-m", model, "--parallel", parallel, "--seed", 5,
                         "--temperature", "1.0")
        assert result.returncode == 0, result.stderr
        outputs[parallel] = {r["id"]: (r["answer"], r["reasoning"], r["finish_reason"],
                                       r["usage"]) for r in records(result.stdout)}
    assert outputs[1] == outputs[4]
    assert all(v[0] == sm.ANSWER_TEXT for v in outputs[1].values())


def test_parallel_reasoning_budget_and_max_tokens(tmp_path, r1_loop_model):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "go"} for i in range(5)])
    result = localr1("batch", source, "-m", r1_loop_model, "--parallel", 3,
                     "--reasoning-budget", "6", "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    for record in records(result.stdout):
        assert record["usage"]["reasoning_tokens"] == 6
        assert record["finish_reason"] == "length" and record["answer"]


def test_template_substitutes_input_and_id(tmp_path, r1_prefill_model):
    template = tmp_path / "t.txt"
    template.write_text("Question {id}: {input} Answer briefly.")
    items = read_items(['{"id": "q7", "prompt": "why {braces}?"}'], template=template.read_text())
    assert items[0].messages[0].content == "Question q7: why {braces}? Answer briefly."
    plain = localr1("batch", "-m", r1_prefill_model, input="hi\n")
    templated = localr1("batch", "-m", r1_prefill_model, "--template", template, input="hi\n")
    assert templated.returncode == 0
    assert records(templated.stdout)[0]["usage"]["prompt_tokens"] > \
        records(plain.stdout)[0]["usage"]["prompt_tokens"]


def test_template_without_placeholder_is_bad_usage(tmp_path, r1_prefill_model):
    template = tmp_path / "t.txt"
    template.write_text("no placeholder")
    assert localr1("batch", "-m", r1_prefill_model, "--template", template,
                   input="x\n").returncode == 2


def test_record_seed_depends_on_seed_and_id_only():
    assert record_seed(1, "a") == record_seed(1, "a")
    assert record_seed(1, "a") != record_seed(1, "b") != record_seed(2, "b")


def test_save_logs_records_as_tagged_conversations(tmp_path, r1_prefill_model):
    result = localr1("batch", "-m", r1_prefill_model, "--save", input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    store = Store.open(app_paths().db_path)
    conversations = store.list_conversations()
    assert len(conversations) == 2
    batch_ids = {c.params["batch_id"] for c in conversations}
    assert len(batch_ids) == 1
    for conversation in conversations:
        user, answer = store.branch(conversation.id)
        assert answer.content == sm.ANSWER_TEXT and answer.batch_id in batch_ids


def test_smollm2_real_answers_and_seeded_reproducibility(tmp_path, smollm2_model):
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "fr", "prompt": "What is the capital of France?"},
        {"id": "sky", "prompt": "Why is the sky blue? One sentence."},
        {"id": "add", "prompt": "What is 2 + 2?"}])
    runs = []
    for parallel in (1, 3):
        result = localr1("batch", source, "-m", smollm2_model, "--parallel", parallel,
                         "--seed", 3, "--max-tokens", 24)
        assert result.returncode == 0, result.stderr
        runs.append({r["id"]: r["answer"] for r in records(result.stdout)})
    assert all(answer.strip() for answer in runs[0].values())
    assert runs[0] == runs[1]


def test_missing_input_file_is_one_line(tmp_path, r1_prefill_model):
    result = localr1("batch", tmp_path / "absent.jsonl", "-m", r1_prefill_model)
    assert result.returncode == 1 and "cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_read_items_rejects_duplicates_before_running():
    with pytest.raises(LocalR1Error, match="duplicate id"):
        read_items(['{"id": "x", "prompt": "a"}', '{"id": "x", "prompt": "b"}'])


def test_a_record_too_long_for_its_sequence_is_an_error_record(tmp_path, r1_prefill_model):
    # Each record is answered whole: a history that would lose turns is refused, not cut.
    long = "word " * 150
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "ok", "prompt": "hi"},
        {"id": "history", "messages": [{"role": "user", "content": long},
                                       {"role": "assistant", "content": long},
                                       {"role": "user", "content": "and now?"}]},
        {"id": "prompt", "prompt": long * 2},
    ])
    result = localr1("batch", source, "-m", r1_prefill_model, "--ctx", 256, "--max-tokens", 40)
    assert result.returncode == 1
    out = {r["id"]: r for r in records(result.stdout)}
    assert out["ok"]["answer"] == sm.ANSWER_TEXT and out["ok"]["error"] is None
    assert out["history"]["error"] == ("line 2: the messages need more than the 256-token "
                                       "context; raise --ctx")
    assert out["prompt"]["error"].startswith("line 3: the prompt needs ")
    assert out["prompt"]["error"].endswith("raise --ctx")
