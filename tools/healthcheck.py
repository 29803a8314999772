"""`python -m tools.healthcheck [URL ...]`: exit 0 when a service answers 200 on
/healthz. The container's HEALTHCHECK: with no URL it asks both services' ports on
loopback (from EDGE_PORT / ORIGIN_PORT, else 8080 / 8081), as one image runs either.
Standard library only, so a check costs a fraction of a second, not an httpx import."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def default_urls() -> list[str]:
    ports = [os.environ.get("EDGE_PORT", "8080"), os.environ.get("ORIGIN_PORT", "8081")]
    return [f"http://127.0.0.1:{port}/healthz" for port in ports]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    urls = (argv if argv is not None else sys.argv[1:]) or default_urls()
    return 0 if any(healthy(url) for url in urls) else 1


if __name__ == "__main__":
    sys.exit(main())
