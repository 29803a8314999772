"""`python -m edge [--config FILE]` serves; `python -m edge sign PATH` prints a signed path."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from cdn_common.logs import configure_logging
from cdn_common.serve import limit_malloc_arenas
from cdn_common.settings import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (environment overrides it)")
    sub = parser.add_subparsers(dest="command")
    sign = sub.add_parser("sign", help="print PATH (/options/source) signed with the first key")
    sign.add_argument("path")
    args = parser.parse_args(argv)

    from edge.settings import EdgeSettings

    try:
        settings = load_settings(EdgeSettings, args.config)
    except ConfigError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2

    if args.command == "sign":
        from edge.security.signing import signed_path

        if not settings.signing_keys:
            print("edge: no EDGE_SIGNING_KEYS configured", file=sys.stderr)
            return 2
        print(signed_path(settings.signing_keys[0], args.path))
        return 0

    configure_logging(settings.log_level)
    listen_fd = os.environ.get("EDGE_LISTEN_FD")
    if settings.process_count > 1 and listen_fd is None:
        from edge.supervisor import Supervisor

        again = ["--config", str(args.config)] if args.config else []
        supervisor = Supervisor(
            settings.host,
            settings.port,
            settings.process_count,
            again,
            settings.shutdown_grace_s,
        )
        return supervisor.run()

    from cdn_common.serve import serve
    from edge.compose import build_app
    from edge.transform.pool import configure_libvips

    sock = None
    if listen_fd is not None:  # one of a supervisor's processes
        from edge.supervisor import stop_with_parent

        sock = socket.socket(fileno=int(listen_fd))
        stop_with_parent()
    app = build_app(settings)
    configure_libvips(settings.for_one_process().workers)
    serve(
        app,
        settings.host,
        settings.port,
        name="edge",
        grace_s=settings.shutdown_grace_s,
        sock=sock,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
