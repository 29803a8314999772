"""`make run`: the origin over ./data/blobs, seeded with sample images, then example URLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cdn_common.stack import Stack

DATA = Path("data")
ORIGIN_PORT = int(os.environ.get("ORIGIN_PORT", "8081"))
DEV_KEY = "dev:dev-secret"


def main() -> int:
    blobs = DATA / "blobs"
    subprocess.run([sys.executable, "-m", "origin", "seed", str(blobs)], check=True)
    stack = Stack()
    env = {
        "ORIGIN_STORAGE": os.environ.get("ORIGIN_STORAGE", f"file://{blobs.resolve()}"),
        "ORIGIN_PORT": str(ORIGIN_PORT),
        "ORIGIN_API_KEYS": os.environ.get("ORIGIN_API_KEYS", DEV_KEY),
    }
    try:
        origin = stack.start("origin", ORIGIN_PORT, env, DATA / "origin.log")
        print(
            f"""
origin ready at {origin.url}  (logs: {DATA / "origin.log"}; Ctrl-C stops)

  {origin.url}/samples/testcard.jpg          the original bytes
  {origin.url}/_meta/samples/testcard.jpg    size, type, dimensions, etag, owner
  curl -X PUT --data-binary @photo.jpg -H 'Authorization: Bearer dev-secret' \\
       {origin.url}/uploads/photo.jpg        upload with the development key
""",
            flush=True,
        )
        while all(service.process.poll() is None for service in stack.services):
            time.sleep(0.5)
        print("a service stopped; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
