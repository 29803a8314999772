"""`python -m loadtests run|bench|plan ...`: load tests, benchmarks and the capacity plan.

python -m loadtests run --scenario mixed --users 64 --duration 60s [--host URL]
python -m loadtests bench [--seconds 8] [--rounds 3]
python -m loadtests plan [--dau 1e6 ...]
python -m loadtests bench-bytes [--plot docs/img/bytes.png]
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": "loadtests.run",
    "bench": "loadtests.bench",
    "plan": "loadtests.plan",
    "attacks": "loadtests.attacks",
    "bench-bytes": "loadtests.bench_bytes",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
