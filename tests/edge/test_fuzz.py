"""The atheris fuzz target for the URL parser, run for a bounded number of inputs.

libFuzzer exits non-zero with the crashing input when `parse_request` raises anything
but a documented HTTP error; a seed corpus of real URL shapes gives it a head start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).parents[2] / "fuzz" / "fuzz_urls.py"
SEEDS = [
    "w=400,h=300,fit=cover,g=auto,f=auto/photos/a.jpg",
    "width=10,quality=50,format=webp,dpr=2,blur=3,sharpen=1,rotate=90/x%20y.png",
    "background=%23ff000080,pad=0.1,trim=5,metadata=keep,anim=false/https://images.example.com/a.gif",
    "fit=pad,gravity=0.2x0.8,flip=hv/../../etc/passwd",
    "_/a.jpg",
]


def test_the_url_parser_survives_the_fuzzer(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(SEEDS):
        (corpus / f"seed-{n}").write_text(seed)
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "-runs=30000",
            "-max_len=512",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=FUZZ.parents[1],
        env={**os.environ, "PYTHONPATH": str(FUZZ.parents[1])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 30000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
