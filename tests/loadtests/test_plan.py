"""The capacity plan's arithmetic against a worked example done by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.plan import Measured, Profile, fraction_for, plan, report, simulated_objects

PROFILE = Profile(
    dau=1_000_000,
    views_per_user=20,
    peak_factor=3,
    images=100_000,
    variants_per_image=5,
    original_kb=2000,
    variant_kb=50,
    retention_days=365,
    uploads_per_day=1000,
    target_hit=0.9,
    l1_share=0.8,
    cores_per_node=8,
    utilisation=0.6,
)


def linear(fraction: float) -> float:
    """A made-up curve: the hit ratio equals the cached share of the working set."""
    return min(fraction, 1.0)


def test_worked_example(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    results.write_text(
        json.dumps(
            {
                "cores": 2,
                "hits": [
                    {"name": "raw ASGI (memory)", "rps": 20000},
                    {"name": "edge L1 hit", "rps": 10000},
                    {"name": "edge L2 hit", "rps": 4000},
                ],
                "transforms": [{"name": "slow", "edge_rps": 40}, {"name": "fast", "edge_rps": 60}],
            }
        )
    )
    measured = Measured.from_results(results)
    # 20 and 30 a second per core, half the misses each: 1 / (0.5/20 + 0.5/30) = 24, not
    # the plain mean of rates (25), which under-counts the slow half's time
    assert measured.transform_per_core == pytest.approx(24)
    assert (measured.l1_rps, measured.l2_rps) == (10000, 4000)
    r = plan(PROFILE, measured, linear)
    # by hand: 1e6 x 20 = 2e7 views; / 86,400 = 231.48/s; x 3 = 694.44/s at peak
    assert r["views_per_day"] == 2e7
    assert r["avg_qps"] == pytest.approx(231.481, abs=1e-3)
    assert r["peak_qps"] == pytest.approx(694.444, abs=1e-3)
    # origin: 10% of requests miss: 69.44/s at peak
    assert r["origin_peak_qps"] == pytest.approx(69.444, abs=1e-3)
    # storage: (100,000 + 1,000 x 365) originals x 2 MB = 930 GB
    assert r["storage_bytes"] == pytest.approx(930e9)
    # working set: 100,000 x 5 x 50 KB = 25 GB; 90% hits on the linear curve = 22.5 GB
    assert r["working_set_bytes"] == pytest.approx(25e9)
    assert r["cache_bytes"] == pytest.approx(22.5e9, rel=1e-6)
    # memory serves 80% of the hits: 72% of requests, 18 GB
    assert r["memory_bytes"] == pytest.approx(18e9, rel=1e-6)
    # egress: 694.44 x 50 KB x 8 = 277.8 Mbit/s; a day 2e7 x 50 KB = 1 TB
    assert r["egress_peak_bits"] == pytest.approx(277.78e6, rel=1e-4)
    assert r["egress_day_bytes"] == pytest.approx(1e12)
    # hits: 500/s from L1 at 10,000/s + 125/s from L2 at 4,000/s = 0.08125 of a core
    assert r["hit_cores"] == pytest.approx(0.08125)
    # transforms: 69.44/s / 24 per core = 2.89 cores; with the hits' 0.08 on 8 cores x 60%
    # = 0.620 nodes
    assert r["transform_cores"] == pytest.approx(2.8935, abs=1e-4)
    assert r["cpu_nodes"] == pytest.approx(0.6197, abs=1e-4)
    # network: 277.8 Mbit/s out + 69.44 x 2 MB x 8 = 1,111 Mbit/s in; / 6 Gbit/s = 0.231
    assert r["fill_peak_bits"] == pytest.approx(1111.1e6, rel=1e-4)
    assert r["bandwidth_nodes"] == pytest.approx(0.2315, abs=1e-4)
    # ceil(0.620) + 1 spare = 2 nodes; each holds half the caches
    assert r["nodes"] == 2
    assert r["l1_per_node_bytes"] == pytest.approx(9e9, rel=1e-6)
    assert r["l2_per_node_bytes"] == pytest.approx(11.25e9, rel=1e-6)
    text = report(PROFILE, measured, r, str(results))
    assert "peak QPS         = 231.5 x 3 = 694.4" in text
    assert "= 2 nodes of 8 cores" in text
    assert "Inputs" in text and "x  50% of misses: slow" in text


def test_the_mix_weights_workloads_by_their_traffic(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    rows = [{"name": "jpeg small", "edge_rps": 100}, {"name": "jpeg huge", "edge_rps": 4}]
    hits = [{"name": "edge L1 hit", "rps": 1}, {"name": "edge L2 hit", "rps": 1}]
    results.write_text(json.dumps({"cores": 2, "hits": hits, "transforms": rows}))
    even = Measured.from_results(results)
    mostly_small = Measured.from_results(results, {"jpeg small": 0.9})
    assert even.transform_per_core == pytest.approx(1 / (0.5 / 50 + 0.5 / 2))
    assert mostly_small.transform_per_core == pytest.approx(1 / (0.9 / 50 + 0.1 / 2))
    # a tenth of the traffic on huge sources, at the plain mean of rates, would have
    # planned (50 + 2) / 2 = 26 a core: 1.8x too few cores against 14.7
    with pytest.raises(ValueError):
        Measured.from_results(results, {"jpeg": 1.5})


def test_the_simulator_keeps_the_days_requests_per_variant() -> None:
    assert simulated_objects(40) == (10_000, 400_000)  # no longer capped at 10
    assert simulated_objects(4000) == (1_000, 400_000)  # the budget, said in the report
    assert simulated_objects(0.2) == (10_000, 10_000)


def test_an_unreachable_hit_ratio_is_said_and_capped() -> None:
    def flat(fraction: float) -> float:
        return min(fraction, 0.6)  # one-hit wonders: at most 60% can ever hit

    assert fraction_for(flat, 0.9) is None
    r = plan(PROFILE, Measured(10000, 4000, 25), flat)
    assert r["hit_ratio"] == 0.6
    assert r["origin_peak_qps"] == pytest.approx(694.444 * 0.4, abs=1e-3)
    text = report(PROFILE, Measured(10000, 4000, 25), r, "bench.json")
    assert "out of reach" in text


def test_the_command_reads_the_committed_bench_results(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtests.plan import main

    assert main(["--dau", "200000", "--target-hit", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "measured: " in out and "bench.json" in out
    assert "nodes of 8 cores" in out
