"""Coverage-guided fuzzing of the edge's URL parser with atheris (libFuzzer).

    python fuzz/fuzz_urls.py -runs=200000 [-max_total_time=60] [corpus_dir]

Every input is tried as a request path, signed and unsigned, both URL forms: the only
exceptions allowed out of `parse_request` are the documented HTTP errors (400/403/404/
414 ...). Anything else is a crash that libFuzzer reports with the input that caused it.
`tests/edge/test_fuzz.py` runs it for a bounded number of inputs in `make test`; the
hypothesis properties in `tests/edge/test_options.py` cover the same contract.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from cdn_common.errors import HTTPError
    from edge.routes import parse_request
    from edge.security.signing import signed_path

KEY = "fuzz-key"
HOSTS = ("images.example.com", "*.cdn.example")


def one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    forms = (text, "/" + text, "/_/" + text, "/cdn-cgi/image/" + text)
    for path in (*forms, signed_path(KEY, "/" + text)):
        for unsigned in (True, False):
            with contextlib.suppress(HTTPError):  # a documented answer
                parse_request(path, keys=(KEY,), allow_unsigned=unsigned, allowed_hosts=HOSTS)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
