"""Bytes, perceptual score and encode CPU per output: the edge's defaults, the defaults
before this table, `quality=auto`, and a sweep of quality and effort, per image and format.

    python -m loadtests bench-bytes [--corpus ../shared/corpus] [--width 400]
                                    [--plot docs/img/bytes.png] [--json FILE]
                                    [--peer NAME=URL-TEMPLATE ...] [--peer-pid NAME=PID ...]

Images: the corpus's still images (where the folder is) and generated ones (a flat
graphic with text, a logo with alpha, a tiny photo crop), each resized to `--width` as
the edge resizes. Each output is scored with SSIMULACRA2 against that resized reference,
by the `ssimulacra2` package (a NumPy port of libjxl's tool, independent of the edge's own
libvips port that `quality=auto` uses): libjxl's own binary is not in Debian 12's
libjxl-tools 0.7, and the package installs with pip on any machine. CPU is the encoder's
(process time), one thread (VIPS_CONCURRENCY=1, as the edge's workers).

A peer (`--peer ipx=http://localhost:3000/w_{width},f_{format},q_{quality}/{name}`) is
asked for the same outputs by URL, its bytes scored the same way; `{name}` is the corpus
file name, so the peer must serve the same folder. With `--peer-pid ipx=PID` its server's
CPU per image is read from /proc around each request (one at a time), and compared with
the edge's whole pipeline for the same output (decode with shrink-on-load, resize,
content check, encode: the "pipeline" rows). The peers table sets the bytes the edge
needs for the peer's score (along its own quality sweep) against the peer's bytes.
Peers are not installed by `make test`; docs/load-testing.md says how to run them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")

import httpx
import pyvips

from edge.transform.encode import (
    Content,
    Encoding,
    auto_quality,
    content_of,
    encode_at,
    jpeg_options,
)
from edge.transform.render import to_srgb
from loadtests.bench_transform import cpu_seconds

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
STILLS = (".jpg", ".png", ".webp", ".avif")
QUALITIES = (40, 50, 60, 70, 80, 90)
FORMATS = ("jpeg", "webp", "avif", "png")


@dataclass
class Output:
    image: str
    kind: str
    format: str
    setting: str  # "default", "before", "auto", "q60 e4", a peer's name
    quality: int
    bytes: int
    cpu_ms: float
    score: float


Source = tuple[str, bytes]  # name, encoded bytes


def stills(corpus: Path) -> list[Source]:
    found = sorted(p for p in corpus.glob("*") if p.suffix in STILLS and p.name != "pixel.png")
    return [(p.name, p.read_bytes()) for p in found]


def generated() -> list[Source]:
    """A flat graphic with text, a logo with alpha, a tiny photo-like gradient with noise."""
    canvas = pyvips.Image.black(800, 500).new_from_image([245, 245, 240])
    for i, colour in enumerate(([200, 30, 40], [20, 90, 200], [250, 190, 0])):
        box = pyvips.Image.black(180, 300).new_from_image(colour)
        canvas = canvas.insert(box, 60 + 240 * i, 120)
    text = pyvips.Image.text("Summer sale: 50% off", dpi=220, font="sans bold")
    ink = text.new_from_image([30, 30, 30]).bandjoin(text)
    graphic = canvas.composite2(ink.copy(interpretation="srgb"), "over", x=40, y=20)[0:3]
    ring = pyvips.Image.xyz(600, 600) - 300
    distance = (ring[0] ** 2 + ring[1] ** 2) ** 0.5
    alpha = ((distance < 280) & (distance > 150)).ifthenelse(255, 0)
    logo = pyvips.Image.black(600, 600).new_from_image([10, 140, 90]).bandjoin(alpha)
    noise = pyvips.Image.gaussnoise(96, 96, sigma=18, mean=128)
    ramp = pyvips.Image.xyz(96, 96)[0] * 2
    tiny = (noise + ramp).bandjoin([noise, ramp]).cast("uchar").copy(interpretation="srgb")
    return [
        ("generated-graphic", bytes(graphic.cast("uchar").pngsave_buffer())),
        (
            "generated-logo-alpha",
            bytes(logo.cast("uchar").copy(interpretation="srgb").pngsave_buffer()),
        ),
        ("generated-tiny", bytes(tiny.pngsave_buffer())),
    ]


def reference(image: pyvips.Image, width: int, fmt: str) -> pyvips.Image:
    """As the edge resizes: upright, to `width` (never up), sRGB 8-bit, flattened for JPEG."""
    image = image.autorot()
    if image.width > width:
        image = image.thumbnail_image(width, height=100_000)
    image = to_srgb(image)
    if fmt == "jpeg" and image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    return image.copy_memory()


def before(image: pyvips.Image, fmt: str, quality: int) -> bytes:
    """The defaults this table replaced (the edge before December 2026)."""
    if fmt == "jpeg":
        return bytes(
            image.jpegsave_buffer(Q=quality, interlace=True, optimize_coding=True, keep="none")
        )
    if fmt == "webp":
        return bytes(image.webpsave_buffer(Q=quality, effort=2, keep="none"))
    if fmt == "avif":
        return bytes(image.heifsave_buffer(Q=quality, compression="av1", effort=3, keep="none"))
    return bytes(image.pngsave_buffer(compression=3, keep="none"))


def swept(image: pyvips.Image, content: Content, fmt: str, quality: int, effort: int) -> bytes:
    if fmt == "jpeg":
        options = jpeg_options(effort, content.graphic, progressive=not content.small)
        return bytes(image.jpegsave_buffer(Q=quality, keep="none", **options))
    if fmt == "webp":
        return bytes(image.webpsave_buffer(Q=quality, effort=effort, keep="none"))
    return bytes(image.heifsave_buffer(Q=quality, compression="av1", effort=effort, keep="none"))


SWEEP_EFFORTS = {"jpeg": (0, 2, 3), "webp": (2, 3, 4, 6), "avif": (3, 5)}


class Scorer:
    """SSIMULACRA2 by the reference package, over PNG files in a scratch directory."""

    def __init__(self, scratch: Path) -> None:
        from ssimulacra2 import compute_ssimulacra2

        self.compute = compute_ssimulacra2
        self.scratch = scratch

    def __call__(self, ref: pyvips.Image, body: bytes) -> float:
        decoded = pyvips.Image.new_from_buffer(body, "")
        if decoded.hasalpha() or ref.hasalpha():
            grey = [128] * (3 if ref.bands >= 3 else 1)
            ref, decoded = ref.flatten(background=grey), decoded.flatten(background=grey)
        ref.write_to_file(str(self.scratch / "ref.png"))
        decoded.write_to_file(str(self.scratch / "out.png"))
        return float(self.compute(str(self.scratch / "ref.png"), str(self.scratch / "out.png")))


def timed(make: Callable[[], bytes]) -> tuple[bytes, float]:
    start = time.process_time()
    body = make()
    return body, 1000 * (time.process_time() - start)


@dataclass(frozen=True)
class Peer:
    name: str
    template: str  # {width}, {format}, {quality}, {name}
    pid: int | None = None  # its server's process: CPU per image from /proc

    def fetch(self, width: int, fmt: str, quality: int, name: str) -> tuple[bytes, float] | None:
        url = self.template.format(width=width, format=fmt, quality=quality, name=name)
        before = cpu_seconds(self.pid, descendants=True) if self.pid else 0.0
        answer = httpx.get(url, timeout=60)
        cpu = cpu_seconds(self.pid, descendants=True) - before if self.pid else 0.0
        return (answer.content, 1000 * cpu) if answer.status_code == 200 else None


def measure(images: list[Source], width: int, peers: list[Peer], score: Scorer) -> list[Output]:
    rows: list[Output] = []
    for name, data in images:
        source = pyvips.Image.new_from_buffer(data, "")
        for fmt in FORMATS:
            rows += outputs(name, data, reference(source, width, fmt), fmt, width, peers, score)
        print(f"{name}: done", file=sys.stderr, flush=True)
    return rows


def pipeline(data: bytes, width: int, fmt: str) -> bytes:
    """What a peer does for a URL, as the edge's worker does it: decode with shrink-on-load,
    resize, convert, check the content, encode."""
    image = pyvips.Image.thumbnail_buffer(data, width, height=100_000, size="down")
    image = reference(image, width, fmt)
    edge = Encoding()
    return encode_at(image, fmt, edge.quality(fmt), edge, content_of(image))


def outputs(
    name: str,
    data: bytes,
    ref: pyvips.Image,
    fmt: str,
    width: int,
    peers: list[Peer],
    score: Scorer,
) -> list[Output]:
    """One image in one format: the defaults, the defaults before, auto, the sweep, peers."""
    edge = Encoding()
    content = content_of(ref)
    quality = edge.quality(fmt)
    made: list[tuple[str, int, bytes, float]] = [
        ("default", quality, *timed(lambda: encode_at(ref, fmt, quality, edge, content))),
        ("before", quality, *timed(lambda: before(ref, fmt, quality))),
    ]
    if fmt != "png":
        made.append(("pipeline", quality, *timed(partial(pipeline, data, width, fmt))))
        start = time.process_time()
        body, chosen, _, _ = auto_quality(ref, fmt, edge, content)
        made.append(("auto", chosen, body, 1000 * (time.process_time() - start)))
        for effort in SWEEP_EFFORTS[fmt]:
            for q in QUALITIES:
                made.append(
                    (f"q{q} e{effort}", q, *timed(partial(swept, ref, content, fmt, q, effort)))
                )
        for peer in peers:
            answer = peer.fetch(width, fmt, quality, name)
            if answer is None:
                continue
            size = pyvips.Image.new_from_buffer(answer[0], "")
            if (size.width, size.height) != (ref.width, ref.height):
                print(f"{peer.name}: {name} as {fmt} is {size.width}x{size.height}, skipped")
                continue
            made.append((peer.name, quality, *answer))
    rows: list[Output] = []
    for setting, q, body, cpu in made:
        # truecolour PNG is lossless: nothing to score; the pipeline makes the default's
        # image (its CPU is the row's point)
        lossless = fmt == "png" and (setting == "before" or not content.graphic)
        if setting == "pipeline":
            value = rows[0].score
        elif lossless:
            value = 100.0
        else:
            value = score(ref, body)
        rows.append(Output(name, content.kind, fmt, setting, q, len(body), cpu, value))
    return rows


def summary(rows: list[Output]) -> str:
    """Per format and setting: total bytes, median score, mean encode CPU."""
    lines = [
        "| format | setting | bytes (all images) | vs before | median score | min score "
        "| CPU ms/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for fmt in FORMATS:
        base = sum(r.bytes for r in rows if r.format == fmt and r.setting == "before")
        for setting in ("before", "default", "auto"):
            chosen = [r for r in rows if r.format == fmt and r.setting == setting]
            if not chosen:
                continue
            total = sum(r.bytes for r in chosen)
            scores = [r.score for r in chosen]
            lines.append(
                f"| {fmt} | {setting} | {total:,} | {total / base:.2f} | "
                f"{statistics.median(scores):.1f} | {min(scores):.1f} | "
                f"{statistics.mean(r.cpu_ms for r in chosen):.1f} |"
            )
    return "\n".join(lines)


def sweep(rows: list[Output], image: str, fmt: str) -> list[tuple[float, int]]:
    """(score, bytes) along the quality sweep of `image` at the effort the edge's defaults
    use for it, by score."""
    kind = next(r.kind for r in rows if r.image == image and r.format == fmt)
    words = kind.split()  # Content.kind's
    content = Content(alpha="alpha" in words, graphic="graphic" in words, small="small" in words)
    effort = Encoding().effort(fmt, content)
    return sorted(
        (r.score, r.bytes)
        for r in rows
        if r.image == image and r.format == fmt and r.setting.endswith(f" e{effort}")
    )


def edge_bytes_at(rows: list[Output], image: str, fmt: str, target: float) -> float | None:
    """Bytes the edge needs on `image` to reach `target`, along its quality sweep at the
    effort its defaults use for that image (interpolated; None outside the sweep)."""
    for (s0, b0), (s1, b1) in itertools.pairwise(sweep(rows, image, fmt)):
        if s0 <= target <= s1:
            return b0 + (target - s0) / max(s1 - s0, 1e-9) * (b1 - b0)
    return None


TARGETS = (70, 75, 80, 84)


def per_target(rows: list[Output]) -> str:
    """What a score costs when every image must reach it: per format, the bytes each image
    needs for the target along its sweep (its lowest quality's where that already scores
    above), over the defaults' bytes for the same images. The images are those whose sweep
    reaches the highest target, so every column counts the same ones."""
    lines = ["| format | images | " + " | ".join(f"target {t}" for t in TARGETS) + " |"]
    lines.append("|---|---|" + "---|" * len(TARGETS))
    for fmt in FORMATS[:3]:
        names = sorted({r.image for r in rows if r.format == fmt and r.setting == "default"})
        names = [n for n in names if max(sweep(rows, n, fmt), default=(0.0, 0))[0] >= TARGETS[-1]]
        if not names:
            continue
        base = sum(
            r.bytes for r in rows if r.format == fmt and r.setting == "default" and r.image in names
        )
        cells = []
        for target in TARGETS:
            need = 0.0
            for name in names:
                points = sweep(rows, name, fmt)
                at = edge_bytes_at(rows, name, fmt, target)
                need += points[0][1] if at is None else at
            cells.append(f"{need / base:.2f}")
        lines.append(f"| {fmt} | {len(names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against_peers(rows: list[Output]) -> str:
    """Per peer and format: the edge's bytes at the peer's score (along its sweep), over the
    peer's bytes; and CPU per image, the peer's server against the edge's pipeline."""
    peers = sorted({r.setting for r in rows} - {"default", "before", "auto", "pipeline"})
    peers = [p for p in peers if not p.startswith("q")]
    lines = [
        "| peer | format | images | edge bytes at the peer's score / peer's: median | max "
        "(image) | over 1.03 | CPU ms/image (mean): peer | edge pipeline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for peer in peers:
        for fmt in ("jpeg", "webp", "avif"):
            theirs = [r for r in rows if r.setting == peer and r.format == fmt]
            ratios = []
            for r in theirs:
                ours = edge_bytes_at(rows, r.image, fmt, r.score)
                if ours is not None:
                    ratios.append((ours / r.bytes, r.image))
            if not ratios:
                continue
            ratios.sort()
            worst = ratios[-1]
            names = {t.image for t in theirs}
            edge_cpu = [
                r.cpu_ms
                for r in rows
                if r.setting == "pipeline" and r.format == fmt and r.image in names
            ]
            middle = statistics.median(v for v, _ in ratios)
            lines.append(
                f"| {peer} | {fmt} | {len(ratios)} | {middle:.2f} | "
                f"{worst[0]:.2f} ({worst[1]}) | {sum(v > 1.03 for v, _ in ratios)} | "
                f"{statistics.mean(r.cpu_ms for r in theirs):.1f} | "
                f"{statistics.mean(edge_cpu):.1f} |"
            )
    return "\n".join(lines)


def per_image(rows: list[Output]) -> str:
    """Per image and lossy format: before, default and auto, as bytes / score."""
    lines = [
        "| image | kind | format | before | default | auto (quality) |",
        "|---|---|---|---|---|---|",
    ]
    keyed = {(r.image, r.format, r.setting): r for r in rows}
    for image in dict.fromkeys(r.image for r in rows):
        for fmt in FORMATS:
            cells = []
            for setting in ("before", "default", "auto"):
                r = keyed.get((image, fmt, setting))
                text = f"{r.bytes:,} / {r.score:.1f}" if r else "-"
                cells.append(f"{text} ({r.quality})" if r and setting == "auto" else text)
            kind = keyed[(image, fmt, "default")].kind
            lines.append(f"| {image} | {kind} | {fmt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[Output], path: Path) -> None:
    """Rate-distortion: per format and effort, the sweep's total bytes against median
    score; the defaults, the defaults before and auto as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, fmt in zip(axes, ("jpeg", "webp", "avif"), strict=True):
        for effort in SWEEP_EFFORTS[fmt]:
            points = []
            for q in QUALITIES:
                chosen = [r for r in rows if r.format == fmt and r.setting == f"q{q} e{effort}"]
                points.append(
                    (
                        sum(r.bytes for r in chosen) / 1024,
                        statistics.median(r.score for r in chosen),
                    )
                )
            ax.plot(*zip(*points, strict=True), marker=".", label=f"effort {effort}")
        for setting, marker in (("before", "x"), ("default", "o"), ("auto", "*")):
            chosen = [r for r in rows if r.format == fmt and r.setting == setting]
            ax.plot(
                sum(r.bytes for r in chosen) / 1024,
                statistics.median(r.score for r in chosen),
                marker=marker,
                markersize=10,
                linestyle="",
                label=setting,
            )
        ax.set_title(fmt)
        ax.set_xlabel("KiB, all images")
        ax.set_ylabel("median SSIMULACRA2")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--plot", type=Path, help="write the rate-distortion plot here (PNG)")
    parser.add_argument("--json", type=Path, help="write every output's figures here")
    parser.add_argument("--peer", action="append", default=[], help="NAME=URL-TEMPLATE")
    parser.add_argument(
        "--peer-pid", action="append", default=[], help="NAME=PID: the peer server's CPU per image"
    )
    args = parser.parse_args(argv)
    pyvips.cache_set_max(0)
    images = (stills(args.corpus) if args.corpus.is_dir() else []) + generated()
    pids = {name: int(pid) for name, pid in (item.split("=", 1) for item in args.peer_pid)}
    peers = [
        Peer(name, template, pids.get(name))
        for name, template in (item.split("=", 1) for item in args.peer)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        rows = measure(images, args.width, peers, Scorer(Path(scratch)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if args.plot:
        plot(rows, args.plot)
    print(f"\n{len(images)} images at {args.width} px; scores: SSIMULACRA2 (ssimulacra2 package)\n")
    print(summary(rows))
    print()
    print(per_target(rows))
    if peers:
        print()
        print(against_peers(rows))
    print()
    print(per_image(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
