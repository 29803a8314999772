"""bench-bytes end to end on the generated images (no corpus): every output is measured
and scored, and the summary, the per-image table and the plot are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import bench_bytes


def test_bench_bytes_measures_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, raw = tmp_path / "bytes.png", tmp_path / "bytes.json"
    argv = ["--corpus", str(tmp_path / "none"), "--width", "96", "--plot", str(plot)]
    assert bench_bytes.main([*argv, "--json", str(raw)]) == 0
    rows = json.loads(raw.read_text())
    settings = {(r["image"], r["format"], r["setting"]) for r in rows}
    sweep = {"jpeg": "q80 e2", "webp": "q80 e4", "avif": "q80 e3"}
    for image in ("generated-graphic", "generated-logo-alpha", "generated-tiny"):
        for fmt in ("jpeg", "webp", "avif"):
            for setting in ("default", "before", "auto", sweep[fmt]):
                assert (image, fmt, setting) in settings
        assert (image, "png", "default") in settings
    assert all(r["bytes"] > 0 and r["score"] <= 100 for r in rows)
    graphic = {
        r["setting"]: r for r in rows if r["image"] == "generated-graphic" and r["format"] == "webp"
    }
    assert graphic["default"]["kind"] == "graphic small"  # 96 px wide here
    assert plot.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "| webp | auto |" in out and "| generated-tiny | photo small | jpeg |" in out
