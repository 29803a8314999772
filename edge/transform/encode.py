"""Encoders: settings chosen by the kind of content, `quality=auto`, and `format=auto`'s
smaller-of-two for graphics and tiny images.

The choices come from `python -m loadtests bench-bytes` (BENCHMARKS.md, "Bytes"):
- JPEG: progressive above SMALL_PIXELS (baseline is smaller below), Huffman tables
  optimised; at the default effort (2) mozjpeg's quantisation tables for photos and
  each progressive scan chosen by trial (`jpeg_options`).
- WebP: effort 4 for graphics and alpha (effort 2 made them up to a third larger), the
  configured effort (3) for photos; graphics up to 256 x 256 px also try near-lossless and
  keep the smaller (on flat art it is often smaller than lossy, and exact where lossy
  halves colour).
- AVIF: graphics keep full-resolution colour (4:4:4): coloured text lost 30 points of
  score at 4:2:0 for about the same bytes.
- PNG: graphics are quantised to a palette (libimagequant; at most 256 colours, exact
  when the image has no more); photos stay lossless truecolour.

`quality=auto` encodes at most AUTO_ENCODES times and keeps the smallest encode whose
SSIMULACRA2 score (edge/transform/score.py) reaches the target.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyvips

from edge.options import AUTO_QUALITY, TransformSpec
from edge.transform.score import ssimulacra2

SMALL_PIXELS = 128 * 128
# a graphic: at least this share of its pixels equal their right neighbour in every colour
# band (flat fills, text, icons, screenshots: 0.9 and over in the corpus; photos 0.0-0.25,
# a smooth rendered wallpaper 0.47): resizing and noise leave photos few equal neighbours
GRAPHIC_FLAT = 0.6
GRAPHIC_WEBP_EFFORT = 4
NEAR_LOSSLESS_Q = 60  # libwebp's near-lossless level 60: small changes to flat art only
# graphics up to this size also try near-lossless: above it the second encode cost 15-55
# ms at 400 px (2-3x the lossy one) and won on one corpus graphic in three
NEAR_LOSSLESS_PIXELS = 256 * 256
AUTO_ENCODES = 3
AUTO_QUALITIES = (30, 95)  # quality=auto searches within
AUTO_CLOSE = 1.0  # score points over the target that end the search
# the last try aims this many points over the target: near the target a quality step moves
# the score by half a point either way (WebP's is not even monotonic), and a last try that
# lands just under sends the first try, at the default quality (4 of 17 corpus WebPs did)
AUTO_MARGIN = 1.0
# a try is begun only when this many of the slowest try so far fit before the deadline
# (the answer still has to reach the edge process, and a busy host slows the next try)
AUTO_DEADLINE_PACE = 1.5
# score points per quality step near the defaults, the first guess's slope (measured)
AUTO_SLOPE = {"jpeg": 0.55, "baseline-jpeg": 0.55, "webp": 0.45, "avif": 0.5}
LOSSY = frozenset(AUTO_SLOPE)


@dataclass(frozen=True, slots=True)
class Encoding:
    jpeg_quality: int = 80
    webp_quality: int = 80
    avif_quality: int = 60
    jpeg_effort: int = 2
    webp_effort: int = 3
    avif_effort: int = 3
    png_effort: int = 3
    auto_target: float = 70.0  # quality=auto's SSIMULACRA2 floor

    def quality(self, output: str) -> int:
        if output == "webp":
            return self.webp_quality
        return self.avif_quality if output == "avif" else self.jpeg_quality

    def effort(self, output: str, content: Content | None) -> int:
        """The lossy encoders' effort for this content: WebP at least GRAPHIC_WEBP_EFFORT
        for graphics and alpha."""
        if output == "webp":
            strong = content is not None and (content.graphic or content.alpha)
            return max(self.webp_effort, GRAPHIC_WEBP_EFFORT) if strong else self.webp_effort
        return self.avif_effort if output == "avif" else self.jpeg_effort


@dataclass(frozen=True, slots=True)
class Content:
    alpha: bool
    graphic: bool
    small: bool

    @property
    def kind(self) -> str:
        """For logs and the benchmark: graphic or photo, with alpha, small."""
        parts = ["graphic" if self.graphic else "photo"]
        return " ".join(parts + ["alpha"] * self.alpha + ["small"] * self.small)


def content_of(image: pyvips.Image) -> Content:
    """What the encoders are tuned by, from the (already resized) image: 0.25 ms of CPU at
    400 px."""
    pixels = image.width * image.height
    colour = image.extract_band(0, n=image.bands - 1 if image.hasalpha() else image.bands)
    flat = 0.0
    if image.width > 1:
        right = colour.crop(1, 0, image.width - 1, image.height)
        same = colour.crop(0, 0, image.width - 1, image.height) == right
        flat = (same.bandbool("and") if same.bands > 1 else same).avg() / 255
    return Content(image.hasalpha(), flat >= GRAPHIC_FLAT, pixels <= SMALL_PIXELS)


def encode(
    image: pyvips.Image,
    output: str,
    spec: TransformSpec,
    enc: Encoding,
    alternative: str | None = None,
    deadline: float = math.inf,
) -> tuple[bytes, str]:
    """The encoded bytes and their format: `output`, or `alternative` (format=auto's second
    choice) when that is smaller, which is tried for graphics and tiny images only.
    `deadline` (time.monotonic) bounds quality=auto's tries."""
    keep = {"none": "none", "copyright": "exif", "keep": "all"}[spec.metadata]
    if spec.metadata == "copyright":
        image = _copyright_only(image)
    content = None
    if output in LOSSY or output == "png":
        # read by the content check and then by one encoder or more: the pipeline (which
        # may read its source sequentially) runs once, into memory
        image = image.copy_memory()
        content = content_of(image)
    body = _encode(image, output, spec.quality, enc, content, keep, deadline)
    if alternative and content and (content.graphic or content.small):
        other = _encode(image, alternative, spec.quality, enc, content, keep, deadline)
        if len(other) < len(body):
            return other, alternative
    return body, output


def _encode(
    image: pyvips.Image,
    output: str,
    quality: int | None,
    enc: Encoding,
    content: Content | None,
    keep: str,
    deadline: float,
) -> bytes:
    if quality == AUTO_QUALITY and output in LOSSY and content is not None:
        return auto_quality(image, output, enc, content, keep, deadline)[0]
    return encode_at(image, output, quality or enc.quality(output), enc, content, keep)


def encode_at(
    image: pyvips.Image,
    output: str,
    quality: int,
    enc: Encoding,
    content: Content | None,
    keep: str = "none",
) -> bytes:
    graphic = content is not None and content.graphic
    if output in ("jpeg", "baseline-jpeg"):
        small = content is not None and content.small
        options = jpeg_options(enc.jpeg_effort, graphic, output == "jpeg" and not small)
        return bytes(image.jpegsave_buffer(Q=quality, keep=keep, **options))
    if output == "webp":
        effort = enc.effort("webp", content)
        body = bytes(image.webpsave_buffer(Q=quality, effort=effort, keep=keep))
        if graphic and image.width * image.height <= NEAR_LOSSLESS_PIXELS:
            # near-lossless: often smaller on flat art, and exact where lossy halves colour
            exact = image.webpsave_buffer(
                near_lossless=True, Q=NEAR_LOSSLESS_Q, effort=effort, keep=keep
            )
            body = min(body, bytes(exact), key=len)
        return body
    if output == "avif":
        return bytes(
            image.heifsave_buffer(
                Q=quality,
                compression="av1",
                effort=enc.avif_effort,
                subsample_mode="off" if graphic else "auto",
                keep=keep,
            )
        )
    if output == "gif":
        return bytes(image.gifsave_buffer(keep=keep))
    return bytes(image.pngsave_buffer(compression=enc.png_effort, palette=graphic, keep=keep))


def jpeg_options(effort: int, graphic: bool, progressive: bool) -> dict[str, bool | int]:
    """jpegsave's options by effort, from mozjpeg's tools (the libvips of the pyvips wheel
    links mozjpeg), each step measured at equal SSIMULACRA2 over the corpus at 400 px:
    0, libjpeg-turbo's (progressive, optimised Huffman tables); 1, photos get mozjpeg's
    perceptual quantisation tables (3% fewer bytes, the same CPU; graphics keep the
    standard ones, which their sharp edges need); 2, each progressive scan's split chosen
    by trial (6-8% fewer bytes in all, 2.2x the encoder's CPU); 3, trellis quantisation
    (10%, 4x). Overshoot deringing (clipped white and black stay flat) from 1 up."""
    options: dict[str, bool | int] = {"interlace": progressive, "optimize_coding": True}
    if effort >= 1:
        options["overshoot_deringing"] = True
        if not graphic:
            options["quant_table"] = 3
    if effort >= 2 and progressive:
        options["optimize_scans"] = True
    if effort >= 3:
        options["trellis_quant"] = True
    return options


def auto_quality(
    image: pyvips.Image,
    output: str,
    enc: Encoding,
    content: Content,
    keep: str = "none",
    deadline: float = math.inf,
) -> tuple[bytes, int, float, int]:
    """The smallest encode scoring at least `enc.auto_target`, its quality, its score and
    the encodes made; the best-scoring one when none reaches the target. The first guess
    is the configured quality; the second moves from it by the measured slope; the third
    interpolates between the two (scores rise with quality, near linearly over a few
    steps), aiming AUTO_MARGIN over the target. No try is begun that would, at the pace of
    the slowest so far, end past `deadline`: the best so far is sent instead of the pool's
    504. `image` is read up to six times (encodes, scores): it must be in memory, as
    `encode` leaves it."""
    tries: dict[int, tuple[bytes, float]] = {}
    quality = enc.quality(output)
    slowest = 0.0
    while len(tries) < AUTO_ENCODES and quality not in tries:
        started = time.monotonic()
        if tries and started + AUTO_DEADLINE_PACE * slowest > deadline:
            break
        body = encode_at(image, output, quality, enc, content, keep)
        score = ssimulacra2(image, _decoded(body))
        tries[quality] = body, score
        slowest = max(slowest, time.monotonic() - started)
        if enc.auto_target <= score < enc.auto_target + AUTO_CLOSE:
            break  # a step lower would save a percent or two of bytes, for an encode
        margin = AUTO_MARGIN if len(tries) == AUTO_ENCODES - 1 else 0.0
        quality = _next_quality(tries, enc.auto_target, AUTO_SLOPE[output], margin)
    good = [(len(body), q) for q, (body, score) in tries.items() if score >= enc.auto_target]
    chosen = min(good)[1] if good else max(tries, key=lambda q: tries[q][1])
    body, score = tries[chosen]
    return body, chosen, score, len(tries)


def _next_quality(
    tries: dict[int, tuple[bytes, float]], target: float, slope: float, margin: float
) -> int:
    """The next quality to try: aimed at `target + margin`, and always between the highest
    failing try and the lowest passing one (a quality already tried ends the search)."""
    above = [q for q, (_, score) in tries.items() if score >= target]
    below = [q for q, (_, score) in tries.items() if score < target]
    aim = target + margin
    if above and below:
        high, low = min(above), max(below)
        (_, s_high), (_, s_low) = tries[high], tries[low]
        step = (aim - s_low) / max(s_high - s_low, 1e-6) * (high - low)
        return max(low + 1, min(high - 1, low + math.ceil(step))) if high - low > 1 else high
    last = min(above) if above else max(below)
    guess = last + round((aim - tries[last][1]) / slope)
    guess = min(guess, last - 1) if above else max(guess, last + 1)
    low, high = AUTO_QUALITIES
    return max(low, min(high, guess))


def _decoded(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")  # read once, by the score


COPYRIGHT_FIELDS = frozenset({"exif-data", "exif-ifd0-Copyright", "exif-ifd0-Artist"})


def _copyright_only(image: pyvips.Image) -> pyvips.Image:
    """EXIF reduced to Copyright and Artist: no camera, no GPS, no timestamps."""
    image = image.copy()
    for name in image.get_fields():
        if name.startswith("exif-") and name not in COPYRIGHT_FIELDS:
            image.remove(name)
    return image
