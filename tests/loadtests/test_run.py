"""Smoke runs of every Locust scenario through `python -m loadtests run` (a few seconds,
few users), so the suites, the runner and the report cannot rot."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests import run
from loadtests.suite import format_images
from tests.images import jpeg, oriented_jpeg, png

USERS = "4"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    (folder / "a.jpg").write_bytes(jpeg(900, 600))
    (folder / "b.png").write_bytes(png(700, 500, alpha=True))
    (folder / "turned.jpg").write_bytes(oriented_jpeg(300, 200, orientation=6))
    (folder / "notes.txt").write_bytes(b"not an image: the set-up skips it")
    return folder


@pytest.fixture(scope="module")
def edge(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One origin + edge for the scenarios run with --host; the set-up uploads the images."""
    with run.local_stack(tmp_path_factory.mktemp("stack"), images) as target:
        yield target.edge, format_images(target.images)


def stats(report: Path) -> dict[str, tuple[int, int]]:
    with open(report / "locust_final_stats.csv", newline="") as f:
        return {
            r["Name"]: (int(r["Request Count"]), int(r["Failure Count"])) for r in csv.DictReader(f)
        }


def go(report: Path, scenario: str, *more: str) -> dict[str, tuple[int, int]]:
    args = ["--scenario", scenario, "--users", USERS, "--duration", "3s", "--report", str(report)]
    code = run.main([*args, *more])
    assert code == 0
    assert (report / "locust.html").stat().st_size > 0
    assert (report / "summary.md").read_text().startswith(f"# Load test: {scenario}")
    return stats(report)


def test_the_set_up_uploads_only_images_with_their_shown_width(edge: tuple[str, str]) -> None:
    assert edge[1] == "loadtest/a.jpg:900,loadtest/b.png:700,loadtest/turned.jpg:200"


@pytest.mark.parametrize("scenario", ["hot", "cold", "mixed", "stampede"])
def test_scenario_against_a_running_edge(
    scenario: str, edge: tuple[str, str], tmp_path: Path
) -> None:
    url, keys = edge
    rows = go(tmp_path, scenario, "--host", url, "--image-keys", keys, "--no-ceiling")
    total, failures = rows.pop("Aggregated")
    assert total > 0 and failures == 0
    tags = {name.split(" ", 1)[1] for name in rows}
    if scenario == "hot":  # warmed before the run: hits only
        assert tags == {"hit:memory"}
    elif scenario == "cold":  # every variant new
        assert tags <= {"miss", "collapsed"} and "miss" in tags
    elif scenario == "mixed":
        assert "hit:memory" in tags
    else:  # several users, one new variant a second: the others wait for it or hit it
        assert tags & {"collapsed", "hit:memory"}
    summary = (tmp_path / "summary.md").read_text()
    assert "Edge cache results during the run" in summary


def test_degraded_starts_its_own_stack_and_stops_the_origin(images: Path, tmp_path: Path) -> None:
    rows = go(tmp_path, "degraded", "--images", str(images), "--ceiling-seconds", "2")
    assert rows["Aggregated"][0] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "the origin was stopped" in summary
    assert "Generator ceiling: Locust reached" in summary
    assert "Served:" in summary
    # our own edge: its memory was sampled, written as CSV and plotted
    assert "Edge RSS (sampled every second" in summary
    with open(tmp_path / "rss.csv", newline="") as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= 3 and all(float(row["rss_mb"]) > 10 for row in samples)
    assert (tmp_path / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_burst_measures_capacity_then_offers_four_times_it(
    edge: tuple[str, str], tmp_path: Path
) -> None:
    url, keys = edge
    rows = go(
        tmp_path,
        "burst",
        "--host",
        url,
        "--image-keys",
        keys,
        "--no-ceiling",
        "--calibrate-seconds",
        "3",
    )
    assert rows.pop("Aggregated")[1] == 0, rows  # 503 + Retry-After is shed, not failed
    hot = {name.split(" ", 1)[1] for name in rows if name.startswith("burst-hot")}
    cold = {name.split(" ", 1)[1] for name in rows if name.startswith("burst-cold")}
    assert hot and hot <= {"hit:memory", "hit:disk"}, rows
    assert cold and cold <= {"miss", "collapsed", "shed"}, rows
    summary = (tmp_path / "summary.md").read_text()
    capacity = float(summary.split("measured transform capacity: ")[1].split(" ")[0])
    offered = float(summary.split("the burst offered ")[1].split("/s")[0])
    assert capacity > 0 and abs(offered - 4 * capacity) <= 1


def test_the_burst_outnumbers_what_our_edge_admits_at_once() -> None:
    from edge.settings import EdgeSettings

    settings = EdgeSettings()
    admitted = 2 * settings.workers + settings.queue
    assert run.burst_users(8, own_edge=True) == 4 * admitted
    assert run.burst_users(10_000, own_edge=True) == 10_000 - run.HOT_USERS
    assert run.burst_users(8, own_edge=False) == 8 - run.HOT_USERS


def test_memory_levelling_off_is_told_from_memory_growing() -> None:
    flat = [(float(t), 300.0 + (20.0 if t > 5 else t * 4)) for t in range(120)]
    growing = [(float(t), 300.0 + t / 2) for t in range(120)]
    assert "+0.0 MB/min" in run.rss_lines(flat)[1]
    assert "+30.0 MB/min" in run.rss_lines(growing)[1]
    assert "peak 320 MB" in run.rss_lines(flat)[1]


def test_the_summary_says_the_users_it_ran_and_survives_a_zero_ceiling() -> None:
    args = argparse.Namespace(scenario="burst", users=4, duration="3s", host=None)
    rows = [run.Row("Aggregated", 100, 0, 50.0, 1, 2, 3)]
    text = run.summary(args, 36, rows, {}, {}, 0.0, {}, [], [])
    assert "users simulated: 36 (the burst's own count; --users asked 4)" in text
    assert "Generator ceiling: not measured" in text
    measured = run.summary(args, 4, rows, {}, {}, 200.0, {}, [], [])
    assert "with the same 4 users" in measured and "(25% of that)" in measured
