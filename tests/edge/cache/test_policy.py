"""S3-FIFO: byte bound, scan resistance, ghost readmission, and the simulator's claim."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.cache.policy import S3FIFO
from loadtests import simulate


def test_stays_within_its_byte_budget_and_reports_evictions() -> None:
    evicted: list[str] = []
    cache: S3FIFO[str, bytes] = S3FIFO(1000, on_evict=lambda k, v: evicted.append(k))
    for i in range(50):
        assert cache.put(f"k{i}", b"x", 100)
        assert cache.size <= 1000
    assert len(cache) == 10
    assert len(evicted) == 40
    assert not cache.put("huge", b"x", 1001)
    assert "huge" not in cache


def test_a_popular_entry_survives_a_scan_of_one_hit_wonders() -> None:
    cache: S3FIFO[str, int] = S3FIFO(10_000)
    cache.put("hot", 1, 100)
    cache.get("hot")
    for i in range(1000):  # 100x the cache, each asked for once
        cache.put(f"scan{i}", i, 100)
        assert cache.get("hot") == 1


def test_an_entry_evicted_early_comes_back_to_the_main_queue() -> None:
    cache: S3FIFO[str, int] = S3FIFO(1000)
    cache.put("a", 1, 100)
    for i in range(20):
        cache.put(f"s{i}", i, 100)
    assert "a" not in cache  # left the small queue unasked: only its key is remembered
    cache.put("a", 1, 100)  # back soon: goes to main and outlives the next wave
    for i in range(20, 40):
        cache.put(f"s{i}", i, 100)
    assert cache.get("a") == 1


def test_pop_and_replace_keep_the_byte_count_exact() -> None:
    cache: S3FIFO[str, int] = S3FIFO(1000)
    cache.put("a", 1, 300)
    cache.put("a", 2, 500)
    assert cache.size == 500 and cache.peek("a") == 2
    assert cache.pop("a") == 2
    assert cache.size == 0 and cache.pop("a") is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["get", "put", "pop"]), st.integers(0, 30), st.integers(1, 400))
    )
)
def test_any_sequence_keeps_size_and_contents_consistent(ops: list[tuple[str, int, int]]) -> None:
    cache: S3FIFO[int, int] = S3FIFO(1000)
    model: dict[int, int] = {}
    for op, key, size in ops:
        if op == "put":
            cache.put(key, size, size)
            model[key] = size
        elif op == "pop":
            cache.pop(key)
            model.pop(key, None)
        else:
            value = cache.get(key)
            assert value is None or value == model[key]
        assert cache.size == sum(cache.peek(k) or 0 for k in cache) <= 1000
        for k in cache:
            assert model[k] == cache.peek(k)


def test_beats_lru_on_zipf_traffic_at_every_size() -> None:
    rows = simulate.simulate(objects=5000, requests=60_000, seed=7)
    for alpha, fraction, results in rows:
        lru, ours = results["LRU"], results["S3-FIFO"]
        assert ours.hit_ratio > lru.hit_ratio, (alpha, fraction)
        assert ours.byte_hit_ratio > lru.byte_hit_ratio, (alpha, fraction)
