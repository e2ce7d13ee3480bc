"""The on-disk response cache: keys, atomic entries, sharing between processes."""

from __future__ import annotations

import multiprocessing
import stat

from care.llm.cache import ResponseCache, cache_key

MESSAGES = [{"role": "user", "content": "Rate turn 3."}]


def test_key_is_canonical_and_sensitive_to_everything():
    base = cache_key("openai", "m", MESSAGES, {"max_tokens": 8, "temperature": 0.0})
    same = cache_key(
        "openai",
        "m",
        [dict(reversed(list(MESSAGES[0].items())))],
        {"temperature": 0.0, "max_tokens": 8},
    )
    assert base == same  # key order does not matter
    variants = [
        cache_key("hf", "m", MESSAGES, {"max_tokens": 8, "temperature": 0.0}),
        cache_key("openai", "m2", MESSAGES, {"max_tokens": 8, "temperature": 0.0}),
        cache_key(
            "openai",
            "m",
            [{"role": "user", "content": "Rate turn 4."}],
            {"max_tokens": 8, "temperature": 0.0},
        ),
        cache_key("openai", "m", MESSAGES, {"max_tokens": 9, "temperature": 0.0}),
        cache_key("openai", "m", MESSAGES, {"max_tokens": 8, "temperature": 0.7}),
    ]
    assert len({base, *variants}) == 6


def test_put_get_and_private_directory(tmp_path):
    cache = ResponseCache(tmp_path / "c")
    key = cache_key("openai", "m", MESSAGES, {})
    assert cache.get(key) is None and key not in cache
    cache.put(key, "（第3轮）咨询师共情。", {"model": "m"})
    assert cache.get(key) == "（第3轮）咨询师共情。"
    assert key in cache and len(cache) == 1
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    assert not list((tmp_path / "c").rglob("*.tmp"))  # no temp files left behind
    # a second instance (another process) sees the same entry
    assert ResponseCache(tmp_path / "c").get(key) == "（第3轮）咨询师共情。"


def test_corrupt_entry_counts_as_missing(tmp_path):
    cache = ResponseCache(tmp_path)
    key = cache_key("openai", "m", MESSAGES, {})
    cache.put(key, "ok")
    cache._path(key).write_text("{trunc", encoding="utf-8")
    assert cache.get(key) is None


def _writer(directory: str, worker: int) -> None:
    cache = ResponseCache(directory)
    for n in range(50):
        cache.put(cache_key("b", "m", [n], {}), f"answer {n}")  # all workers: same keys


def test_parallel_processes_share_one_directory(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(tmp_path)
    assert len(cache) == 50
    assert all(cache.get(cache_key("b", "m", [n], {})) == f"answer {n}" for n in range(50))
