"""What one source or result may cost, checked before any pixel is decoded: pixels and
frames from the header (`edge/transform/header.py` and `render.probe`), the output's
longest side. Byte limits on sources are checked while they stream
(`edge/origin_client.py`); sizes of request heads in `cdn_common/asgi.py`."""

from __future__ import annotations

from dataclasses import dataclass

from cdn_common.errors import BadRequest, HTTPError, PayloadTooLarge
from edge.settings import EdgeSettings


@dataclass(frozen=True, slots=True)
class Limits:
    max_src_px: int
    max_frames: int
    max_out: int

    @classmethod
    def of(cls, settings: EdgeSettings) -> Limits:
        return cls(
            max_src_px=int(settings.max_src_mp * 1_000_000),
            max_frames=settings.max_frames,
            max_out=settings.max_out_px,
        )


# Costs checked before decoding or encoding, where one request could buy tens of
# seconds of CPU (each measured: 42 s for a 10,000-scan progressive JPEG, 35 s for
# blur=250 on an 8192 px image, 20 s for an 8192 px AVIF encode). The deadline stops
# anything that still runs long; these refuse what cannot fit in it at all.
MAX_JPEG_SCANS = 100  # encoders write 1 (baseline) to about 12 (progressive)
BLUR_BUDGET = 2_000_000_000  # output pixels x blur sigma: 4000 x 4000 at sigma 125
AVIF_MAX_PIXELS = 16_777_216  # 4096 x 4096; `format=auto` sends WebP above it
SOS = b"\xff\xda"  # start of scan: in entropy-coded data 0xFF is always stuffed


def check_blur(blur: int | None, output: tuple[int, int]) -> None:
    if blur and output[0] * output[1] * (blur / 2) > BLUR_BUDGET:
        raise BadRequest(
            f"blur={blur} on a {output[0]}x{output[1]} result is over this edge's blur "
            "budget; blur less or ask for a smaller size"
        )


def avif_allowed(output: tuple[int, int]) -> bool:
    return output[0] * output[1] <= AVIF_MAX_PIXELS


def check_avif(output: tuple[int, int]) -> None:
    if not avif_allowed(output):
        raise BadRequest(
            f"AVIF results are limited to {AVIF_MAX_PIXELS // 1_000_000} MP; "
            "ask for a smaller size or another format"
        )


def check_scans(data: bytes | memoryview) -> None:
    """A progressive JPEG's scan count: each scan costs a pass over every pixel."""
    scans = (data if isinstance(data, bytes) else bytes(data)).count(SOS)
    if scans > MAX_JPEG_SCANS:
        raise UnprocessableScans(f"JPEG has {scans} scans, over the limit of {MAX_JPEG_SCANS}")


class UnprocessableScans(HTTPError):
    status = 422
    message = "JPEG has too many scans"


class OverMemory(PayloadTooLarge):
    message = "transform needs more memory than a worker may use (EDGE_WORKER_MEMORY_MB)"
