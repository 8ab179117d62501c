"""The conversation store at scale: 10,000 conversations / 200,000 messages.

Fills a fresh database (bulk inserts through sqlite-utils, FTS triggers on, like the real
schema), then reports the median latency over --runs runs of what the UI does most:
listing the newest 100 conversations, opening a 500-message conversation, and a full-text
search for a word found in many messages, for a Japanese word (trigram index) and a
2-character Chinese one (LIKE over the newest messages). Targets: each under 50 ms.

    python bench/store_scale.py [--db PATH] [--runs 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from localr1.store import Store

CONVERSATIONS = 10_000
MESSAGES = 200_000
BIG_CONVERSATION = 500
TARGET_MS = 50.0
SEARCH_WORD = "python"  # in 3% of the sentences: about one message in seven
# 1% of the sentences end in one of these (drawn from their own random stream, so the
# English text is the same as before they were added).
CJK_PHRASES = ("日本語のテキストを読む", "中文的推理过程", "用中文回答", "テキストを翻訳して",
               "🚀 ロケット")
CJK_SEARCHES = ("日本語", "中文")
COMMON_WORDS = ("the a of to and in is it that for you with on as are this be can by or not from "
          "at your but if an will more one all use so when there which do would how what "
          "about some like just other time also model first think because first two way "
          "answer question data then value step need")
TOPIC_WORDS = ("sqlite database index query function python rust memory thread process token "
          "context prompt reasoning matrix vector gradient tensor physics rainbow scattering "
          "light recipe bread flour garden tomato history empire river mountain poem story "
          "robot paint music guitar chord budget invoice tax travel train ticket")


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ra", "to", "vi", "su", "pe", "do", "ga", "zu",
                 "ren", "tal", "mor", "bis", "kel", "dra", "fen", "lor", "ith", "eth", "on"]
    words = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(size * 2)}
    return COMMON_WORDS.split() + TOPIC_WORDS.split() + sorted(words)[:size]


class TextMaker:
    """Word salad made of a pool of Zipf-ish sentences: common words everywhere, rare words
    rarely, like real text; composing messages from sentences keeps the fill fast."""

    def __init__(self, rng: random.Random, cjk_rng: random.Random,
                 sentences: int = 40_000) -> None:
        self.rng = rng
        words = vocabulary(rng)
        weights = [1 / (rank + 1) ** 1.05 for rank in range(len(words))]
        cum_weights = list(itertools.accumulate(weights))
        self.sentences = []
        for _ in range(sentences):
            sentence = rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 16))
            if rng.random() < 0.03:
                sentence[rng.randrange(len(sentence))] = SEARCH_WORD
            if cjk_rng.random() < 0.01:
                sentence.append(cjk_rng.choice(CJK_PHRASES))
            self.sentences.append(" ".join(sentence).capitalize() + ".")

    def text(self, n_words: int) -> str:
        return " ".join(self.rng.choices(self.sentences, k=max(1, n_words // 10)))


def fill(path: Path, seed: int) -> tuple[int, float]:
    """Create the schema with Store.open, bulk-insert the data; (big conversation id, s)."""
    started = time.perf_counter()
    Store.open(path).close()
    rng = random.Random(seed)
    maker = TextMaker(rng, random.Random(seed + 1))
    base = datetime(2024, 1, 1, tzinfo=UTC)
    big_id = rng.randint(1, CONVERSATIONS)
    sizes = [BIG_CONVERSATION if cid == big_id else 0 for cid in range(1, CONVERSATIONS + 1)]
    rest = MESSAGES - BIG_CONVERSATION
    others = CONVERSATIONS - 1
    for i, cid in enumerate(c for c in range(1, CONVERSATIONS + 1) if c != big_id):
        sizes[cid - 1] = rest // others + (1 if i < rest % others else 0)
    # Vary the lengths (keep the total): move messages between random pairs.
    for _ in range(CONVERSATIONS):
        a, b = rng.randrange(CONVERSATIONS), rng.randrange(CONVERSATIONS)
        if a + 1 != big_id and b + 1 != big_id and sizes[a] > 4:
            shift = rng.randint(1, sizes[a] - 2)
            sizes[a] -= shift
            sizes[b] += shift

    conversations, messages = [], []
    for cid, size in enumerate(sizes, 1):
        start = base + timedelta(seconds=rng.uniform(0, 365 * 86400))
        step = timedelta(seconds=rng.uniform(5, 600))
        if cid == big_id:  # a long-running conversation, its messages spread over months
            start, step = base, timedelta(hours=12)
        parent = None
        at = start
        for n in range(size):
            at = at + step
            role = "user" if n % 2 == 0 else "assistant"
            message = {"conversation_id": cid, "parent_id": parent, "role": role,
                       "content": maker.text(rng.randint(8, 30) if role == "user"
                                             else rng.randint(30, 90)),
                       "reasoning": maker.text(rng.randint(30, 90)) if role == "assistant"
                       else None,
                       "thinking_seconds": round(rng.uniform(1, 40), 1)
                       if role == "assistant" else None,
                       "model": "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M" if role == "assistant"
                       else None,
                       "finish_reason": "stop" if role == "assistant" else None,
                       "completion_tokens": rng.randint(50, 900) if role == "assistant"
                       else None,
                       "created_at": at.isoformat(timespec="microseconds")}
            messages.append(message)
            parent = message
        conversations.append({
            "id": cid, "title": maker.text(rng.randint(3, 8))[:60],
            "model": "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M", "params": "{}",
            "created_at": start.isoformat(timespec="microseconds"),
            "updated_at": at.isoformat(timespec="microseconds"),
            "pinned": int(rng.random() < 0.001), "archived": int(rng.random() < 0.02),
            "leaf": parent})
    # Ids in time order, as the app would have assigned them (a long chat's messages are
    # scattered through the table).
    messages.sort(key=lambda m: m["created_at"])
    for new_id, message in enumerate(messages, 1):
        message["id"] = new_id
    rows = [{**m, "parent_id": m["parent_id"]["id"] if m["parent_id"] else None}
            for m in messages]
    for c in conversations:
        c["active_leaf_id"] = c.pop("leaf")["id"]

    generated = time.perf_counter()
    db = Database(path)
    db.execute("PRAGMA foreign_keys = OFF")  # circular conversation <-> message links
    with db.atomic():
        db["conversations"].insert_all(conversations, batch_size=1000)
        db["messages"].insert_all(rows, batch_size=1000)
    db.execute("ANALYZE")
    db.close()
    print(f"generated the text in {generated - started:.1f} s, "
          f"inserted it in {time.perf_counter() - generated:.1f} s")
    return big_id, time.perf_counter() - started


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm up (first query after open reads the schema)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database to create (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        if path.exists():
            sys.exit(f"{path} exists; give a new path")
        big_id, fill_s = fill(path, args.seed)
        size_mb = path.stat().st_size / 1e6
        print(f"filled {CONVERSATIONS:,} conversations / {MESSAGES:,} messages in "
              f"{fill_s:.1f} s ({size_mb:.0f} MB)")
        with Store.open(path) as store:
            hits = store.search(SEARCH_WORD)
            matching = store._rows("SELECT count(*) AS n FROM messages_fts WHERE messages_fts "
                                   "MATCH ?", (f'{{content}} : "{SEARCH_WORD}"',))
            branch = store.branch(big_id)
            assert len(branch) == BIG_CONVERSATION, len(branch)
            assert len(store.list_conversations(limit=100)) == 100
            assert hits, "the search word is missing"
            results = [
                ("list_conversations(limit=100)",
                 median_ms(lambda: store.list_conversations(limit=100), args.runs)),
                (f"branch() of a {BIG_CONVERSATION}-message conversation",
                 median_ms(lambda: store.branch(big_id), args.runs)),
                (f"search({SEARCH_WORD!r}) ({matching[0]['n']:,} matching messages)",
                 median_ms(lambda: store.search(SEARCH_WORD), args.runs)),
            ]
            for word in CJK_SEARCHES:
                assert store.search(word), f"{word} is missing"
                results.append((f"search({word!r})",
                                median_ms(lambda word=word: store.search(word), args.runs)))
    failed = False
    print(f"median of {args.runs} runs, target < {TARGET_MS:.0f} ms each:")
    for name, ms in results:
        ok = ms < TARGET_MS
        failed |= not ok
        print(f"  {name:<58} {ms:7.2f} ms  {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
