"""Encoder choices by content kind, quality=auto's budget and floor, format=auto's smaller
of AVIF and WebP, and the libvips SSIMULACRA2 against the reference package."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips
from ssimulacra2 import compute_ssimulacra2

from edge.keys import variant_key
from edge.options import parse_options
from edge.security.limits import Limits
from edge.transform import encode as encoders
from edge.transform.encode import AUTO_ENCODES, Encoding, auto_quality, content_of, encode_at
from edge.transform.render import prepare, render
from edge.transform.score import ssimulacra2
from tests.images import graphic, photo_like

LIMITS = Limits(max_src_px=50_000_000, max_frames=100, max_out=8192)


def decoded(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "").copy_memory()


def reference_score(tmp_path: Path, one: pyvips.Image, two: pyvips.Image) -> float:
    one.write_to_file(str(tmp_path / "a.png"))
    two.write_to_file(str(tmp_path / "b.png"))
    return float(compute_ssimulacra2(str(tmp_path / "a.png"), str(tmp_path / "b.png")))


def test_the_score_follows_the_reference_implementation(tmp_path: Path) -> None:
    # 250 px: libjxl rounds scale sizes up (125, 63, 32, 16, 8): one scale more than
    # rounding down, and the weights are per scale
    for image in (photo_like(), photo_like(400, 250, seed=3), graphic()):
        assert ssimulacra2(image, image) == pytest.approx(100, abs=0.01)
        ours, theirs = [], []
        for quality in (20, 50, 90):
            encoded = decoded(image.webpsave_buffer(Q=quality))
            ours.append(ssimulacra2(image, encoded))
            theirs.append(reference_score(tmp_path, image, encoded))
        # edges are handled as libvips does, not as libjxl does: a few points apart
        assert ours == pytest.approx(theirs, abs=3)
    # on a photo, the score rises with quality (on flat art lossy WebP's halved colour
    # resolution caps it, whatever the quality: why graphics get near-lossless WebP)
    assert ours != sorted(ours)
    photo = photo_like()
    scores = [ssimulacra2(photo, decoded(photo.webpsave_buffer(Q=q))) for q in (20, 50, 90)]
    assert scores == sorted(scores) and scores[0] < scores[-1] - 10


def test_content_kinds() -> None:
    assert content_of(photo_like()).kind == "photo"
    assert content_of(graphic()).kind == "graphic"
    assert content_of(graphic(alpha=True)).kind == "graphic alpha"
    assert content_of(photo_like(100, 100)).kind == "photo small"


def test_defaults_differ_by_content_kind() -> None:
    enc = Encoding()
    photo, flat = photo_like(), graphic()
    # WebP: photos get the configured effort (3); graphics effort 4, and near-lossless
    # when that is smaller
    body = encode_at(photo, "webp", 80, enc, content_of(photo))
    assert body == bytes(photo.webpsave_buffer(Q=80, effort=3, keep="none"))
    lossy = bytes(flat.webpsave_buffer(Q=80, effort=4, keep="none"))
    exact = bytes(flat.webpsave_buffer(Q=60, near_lossless=True, effort=4, keep="none"))
    assert encode_at(flat, "webp", 80, enc, content_of(flat)) == min(lossy, exact, key=len)
    assert len(exact) < len(lossy)  # on this one
    # above 256 x 256 px, lossy effort 4 alone (a second encode costs 2-3x the first)
    large = graphic(400, 260)
    body = encode_at(large, "webp", 80, enc, content_of(large))
    assert body == bytes(large.webpsave_buffer(Q=80, effort=4, keep="none"))
    # AVIF: graphics keep full-resolution colour (4:4:4): coloured text stays sharp
    ours = decoded(encode_at(flat, "avif", 60, enc, content_of(flat)))
    halved = decoded(flat.heifsave_buffer(Q=60, compression="av1", effort=3))
    assert ssimulacra2(flat, ours) > ssimulacra2(flat, halved) + 10
    # PNG: graphics are quantised to a palette, photos stay truecolour
    assert decoded(encode_at(flat, "png", 80, enc, content_of(flat))).get("palette")
    photo_png = decoded(encode_at(photo, "png", 80, enc, content_of(photo)))
    assert not photo_png.get_typeof("palette") or not photo_png.get("palette")
    # JPEG: mozjpeg's tables for photos (graphics keep the standard ones), scans by trial
    standard = {"interlace": True, "optimize_coding": True, "optimize_scans": True}
    assert encode_at(photo, "jpeg", 80, enc, content_of(photo)) == bytes(
        photo.jpegsave_buffer(
            Q=80, keep="none", quant_table=3, overshoot_deringing=True, **standard
        )
    )
    assert encode_at(flat, "jpeg", 80, enc, content_of(flat)) == bytes(
        flat.jpegsave_buffer(Q=80, keep="none", overshoot_deringing=True, **standard)
    )
    # JPEG: progressive above 128 x 128 px only
    small = photo_like(100, 100)
    scans = {
        name: decoded(encode_at(image, "jpeg", 80, enc, content_of(image))).get("jpeg-multiscan")
        for name, image in (("large", photo), ("small", small))
    }
    assert scans == {"large": 1, "small": 0}


def test_quality_auto_stays_within_its_budget_and_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    encodes: list[int] = []
    real = encoders.encode_at

    def counted(*args: object, **kwargs: object) -> bytes:
        encodes.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(encoders, "encode_at", counted)
    enc = Encoding(auto_target=70)
    for image in (photo_like(seed=1), photo_like(320, 200, seed=2), graphic()):
        for fmt in ("jpeg", "webp", "avif"):
            encodes.clear()
            body, quality, score, made = auto_quality(image, fmt, enc, content_of(image))
            assert len(encodes) == made <= AUTO_ENCODES
            assert score == pytest.approx(ssimulacra2(image, decoded(body)))
            assert score >= 70, (fmt, quality, score)
            # the configured quality is tried first: when it keeps the floor, auto is
            # never larger than it
            default = real(image, fmt, enc.quality(fmt), enc, content_of(image))
            if ssimulacra2(image, decoded(default)) >= 70:
                assert len(body) <= len(default)


def test_quality_auto_aims_its_last_try_over_the_target() -> None:
    def tries(*scores: tuple[int, float]) -> dict[int, tuple[bytes, float]]:
        return {quality: (b"", score) for quality, score in scores}

    # between a failing and a passing try: interpolated at target + margin, rounded up
    # (a last try landing at 69.9 would leave the first, at the default quality, to send)
    assert encoders._next_quality(tries((80, 77.4), (63, 69.9)), 70, 0.45, 0.0) == 64
    assert encoders._next_quality(tries((80, 77.4), (63, 69.9)), 70, 0.45, 1.0) == 66
    # never outside the bracket, and never the passing try again
    assert encoders._next_quality(tries((80, 71.2), (63, 69.9)), 70, 0.45, 5.0) == 79
    assert encoders._next_quality(tries((66, 71.2), (65, 69.9)), 70, 0.45, 1.0) == 66
    # one side only: a passing try is followed by a lower quality, a failing by a higher
    assert encoders._next_quality(tries((80, 70.6)), 70, 0.45, 1.0) == 79
    assert encoders._next_quality(tries((80, 69.9)), 70, 0.45, 0.0) == 81
    assert encoders._next_quality(tries((40, 50.0)), 70, 0.45, 0.0) == 84


def test_quality_auto_sends_its_best_try_rather_than_run_past_the_deadline() -> None:
    image, enc = photo_like(seed=1), Encoding(auto_target=70)
    content = content_of(image)
    body, quality, _, made = auto_quality(image, "webp", enc, content, "none", 0.0)
    assert (made, quality) == (1, enc.webp_quality)  # the first try is always made
    assert body == encode_at(image, "webp", enc.webp_quality, enc, content)
    *_, unbounded = auto_quality(image, "webp", enc, content)
    assert unbounded > 1  # this image's default is not within a point of the target


def test_quality_auto_is_its_own_variant() -> None:
    auto, fixed = parse_options("width=100,quality=auto"), parse_options("width=100,q=80")
    assert auto.canonical == "quality=auto,width=100"
    assert variant_key("s", auto, "") != variant_key("s", fixed, "")
    data = bytes(photo_like().jpegsave_buffer(Q=95))
    job = prepare(data, auto, "", LIMITS)
    rendered = render(data, auto, job, Encoding(), time.monotonic() + 30)
    assert rendered.format == "jpeg" and rendered.width == 100


def test_format_auto_sends_webp_when_it_is_smaller_than_avif() -> None:
    accept = "image/avif,image/webp,*/*"
    spec = parse_options("width=240,format=auto")
    flat = bytes(graphic(240, 160).pngsave_buffer())
    job = prepare(flat, spec, accept, LIMITS)
    assert (job.output, job.alternative) == ("avif", "webp")
    rendered = render(flat, spec, job, Encoding(), time.monotonic() + 30)
    image = decoded(flat)
    avif = len(encode_at(image, "avif", 60, Encoding(), content_of(image)))
    webp = len(encode_at(image, "webp", 80, Encoding(), content_of(image)))
    assert webp < avif  # the case this test is about
    assert rendered.format == "webp" and len(rendered.body) == webp
    # a photo is not tried twice: AVIF as negotiated
    photo = bytes(photo_like(240, 160).jpegsave_buffer(Q=95))
    job = prepare(photo, spec, accept, LIMITS)
    assert render(photo, spec, job, Encoding(), time.monotonic() + 30).format == "avif"
    # only WebP accepted: no alternative to try
    assert prepare(flat, spec, "image/webp", LIMITS).alternative is None
