"""`python -m origin [--config FILE]` serves; `python -m origin seed DIR` writes sample images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdn_common.logs import configure_logging
from cdn_common.serve import limit_malloc_arenas
from cdn_common.settings import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()
    parser = argparse.ArgumentParser(prog="python -m origin", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (environment overrides it)")
    sub = parser.add_subparsers(dest="command")
    seed = sub.add_parser("seed", help="write a few sample images into a directory store")
    seed.add_argument("directory", type=Path)
    args = parser.parse_args(argv)

    if args.command == "seed":
        from origin.samples import write_samples

        for path in write_samples(args.directory):
            print(path)
        return 0

    from origin.settings import OriginSettings

    try:
        settings = load_settings(OriginSettings, args.config)
    except ConfigError as exc:
        print(f"origin: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    from cdn_common.serve import serve
    from origin.app import build_app
    from origin.stores import open_store

    try:
        store = open_store(
            settings.storage,
            s3_endpoint=settings.s3_endpoint,
            memory_cache_bytes=int(settings.memory_cache_mb * 1024 * 1024),
        )
    except (OSError, ValueError) as exc:
        print(f"origin: invalid configuration: ORIGIN_STORAGE: {exc}", file=sys.stderr)
        return 2
    serve(
        build_app(settings, store),
        settings.host,
        settings.port,
        name="origin",
        grace_s=settings.shutdown_grace_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
