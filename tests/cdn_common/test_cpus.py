"""CPU counting from affinity and a cgroup v2 quota, on a fake cgroup tree."""

from __future__ import annotations

import os
from pathlib import Path

from cdn_common.cpus import cgroup_quota, usable_cpus


def test_a_quota_lowers_the_count_rounding_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_no_quota_leaves_the_affinity_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_tiny_quota_still_leaves_one_cpu(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("10000 100000\n")
    assert usable_cpus(tmp_path) == 1


def test_no_cgroup_file_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "missing") is None
