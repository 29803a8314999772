"""`make run`: origin over ./data/blobs (seeded with samples) and the edge, then example URLs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tools.stack import Stack

DATA = Path("data")
ORIGIN_PORT = int(os.environ.get("ORIGIN_PORT", "8081"))
EDGE_PORT = int(os.environ.get("EDGE_PORT", "8080"))
DEV_KEY = "dev:dev-secret"
DEV_PURGE_KEY = "dev-purge"


def busy(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def main() -> int:
    for port, variable in ((EDGE_PORT, "EDGE_PORT"), (ORIGIN_PORT, "ORIGIN_PORT")):
        if busy(port):
            print(f"port {port} is in use; set {variable}", file=sys.stderr)
            return 1
    blobs = DATA / "blobs"
    subprocess.run([sys.executable, "-m", "origin", "seed", str(blobs)], check=True)
    stack = Stack()
    env = {
        "ORIGIN_STORAGE": os.environ.get("ORIGIN_STORAGE", f"file://{blobs.resolve()}"),
        "ORIGIN_PORT": str(ORIGIN_PORT),
        "ORIGIN_API_KEYS": os.environ.get("ORIGIN_API_KEYS", DEV_KEY),
        # an overwrite or delete purges the edge at once: "replace an image" just works
        "ORIGIN_PURGE_WEBHOOKS": f"http://127.0.0.1:{EDGE_PORT}/_purge",
        "ORIGIN_PURGE_KEY": DEV_PURGE_KEY,
    }
    try:
        origin = stack.start("origin", ORIGIN_PORT, env, DATA / "origin.log")
        edge_env = {
            "EDGE_PORT": str(EDGE_PORT),
            "EDGE_ORIGIN_URL": origin.url,
            "EDGE_PURGE_KEYS": DEV_PURGE_KEY,
        }
        edge = stack.start("edge", EDGE_PORT, edge_env, DATA / "edge.log")
        e = edge.url
        print(
            f"""
origin {origin.url} and edge {e} are up (logs in {DATA}/; Ctrl-C stops both)

  {e}/_/width=400/samples/testcard.jpg                 400 px wide, same format
  {e}/_/width=400,format=auto/samples/testcard.jpg     AVIF or WebP, as the browser accepts
  {e}/_/w=300,h=300,fit=cover,g=auto/samples/testcard.jpg  smart-cropped square
  {e}/_/w=600,h=300,fit=pad,background=%23102030/samples/alpha.png  padded, on a colour
  {e}/_/width=200,format=json/samples/small.webp       what the transform would make
  {e}/cdn-cgi/image/width=320,quality=60/samples/testcard.jpg  Cloudflare-style URL
  {origin.url}/_meta/samples/testcard.jpg              the origin's metadata

  upload:  curl -X PUT --data-binary @photo.jpg -H 'Authorization: Bearer dev-secret' \\
           {origin.url}/uploads/photo.jpg
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
