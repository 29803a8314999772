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
    assert "| format | images | target 70 |" in out
    assert "| webp | auto |" in out and "| generated-tiny | photo small | jpeg |" in out


def test_per_target_prices_every_image_reaching_each_score() -> None:
    def row(setting: str, score: float, size: int) -> bench_bytes.Output:
        return bench_bytes.Output("a.jpg", "photo", "jpeg", setting, 80, size, 1.0, score)

    # the defaults' JPEG effort is 2: the e0 point is another sweep and must be ignored
    rows = [row("default", 80, 100), row("q50 e2", 72, 60), row("q90 e2", 92, 140)]
    rows.append(row("q10 e0", 20, 5))
    table = bench_bytes.per_target(rows)
    # 70 is under the lowest try (q50 already scores 72): that try's bytes; then interpolated
    assert "| jpeg | 1 | 0.60 | 0.72 | 0.92 | 1.08 |" in table
