"""What one source or result may cost, checked before any pixel is decoded: pixels and
frames from the header (`edge/transform/header.py` and `render.probe`), the output's
longest side. Byte limits on sources are checked while they stream
(`edge/origin_client.py`); sizes of request heads in `cdn_common/asgi.py`."""

from __future__ import annotations

from dataclasses import dataclass

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
