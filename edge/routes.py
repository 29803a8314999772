"""The edge URL grammar: `/{signature}/{options}/{source}` and `/cdn-cgi/image/{options}/{source}`.

    parse_request(raw_path, ...) -> ImageRequest, or BadRequest / Forbidden

Pure: the raw (percent-encoded) path goes in, a frozen request comes out. The signature
covers the path exactly as sent; options and source are percent-decoded after that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from cdn_common.errors import BadRequest, Forbidden, NotFound
from edge.options import TransformSpec, parse_options
from edge.security.signing import verify
from edge.security.sources import host_allowed

CDN_CGI = "/cdn-cgi/image/"
MAX_SOURCE_BYTES = 2048
ORIGIN_ENDPOINTS = frozenset({"healthz", "readyz", "metrics"})  # as origin/keys.py reserves
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class BadSource(BadRequest):
    message = "invalid source"


class BadSignature(Forbidden):
    message = "invalid signature"


@dataclass(frozen=True, slots=True)
class OriginSource:
    """A blob on the configured origin."""

    key: str

    @property
    def id(self) -> str:
        return self.key

    def url(self, origin: str) -> str:
        return f"{origin.rstrip('/')}/{quote(self.key, safe='/')}"


@dataclass(frozen=True, slots=True)
class RemoteSource:
    """An absolute http(s) URL on an allowed host."""

    url: str
    host: str

    @property
    def id(self) -> str:
        return self.url


Source = OriginSource | RemoteSource


@dataclass(frozen=True, slots=True)
class ImageRequest:
    spec: TransformSpec
    source: Source


def parse_request(
    raw_path: str,
    *,
    keys: tuple[str, ...],
    allow_unsigned: bool,
    allowed_hosts: tuple[str, ...],
    presets: Mapping[str, str] | None = None,
    only_presets: bool = False,
    rewrite: Callable[[str], str] | None = None,
) -> ImageRequest:
    """`presets`: names usable as the whole options segment (`/_/thumb/a.jpg`), as
    imgproxy's presets and Cloudflare's variants; `only_presets` refuses any other."""
    if raw_path.startswith(CDN_CGI):
        if not allow_unsigned:
            raise BadSignature("unsigned URLs are disabled on this edge")
        rest = raw_path[len(CDN_CGI) :]
    else:
        signature, sep, rest = raw_path[1:].partition("/")
        if not sep:
            raise BadRequest("expected /{signature}/{options}/{source}")
        if signature == "_":
            if not allow_unsigned:
                raise BadSignature("unsigned URLs are disabled on this edge")
        elif not keys or not verify(keys, signature, "/" + rest):
            raise BadSignature()
    options, sep, source = rest.partition("/")
    if not sep or not source:
        raise BadRequest("expected /{signature}/{options}/{source}")
    try:
        decoded = unquote(options, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("invalid options: not UTF-8") from None
    if presets and decoded in presets:
        decoded = presets[decoded]
    elif only_presets and decoded != "_":
        raise BadRequest("this edge serves named presets only")
    if rewrite is not None:  # client hints: `width=auto` from the request's headers
        decoded = rewrite(decoded)
    spec = parse_options(decoded)
    return ImageRequest(spec, parse_source(source, allowed_hosts))


def parse_source(raw: str, allowed_hosts: tuple[str, ...]) -> Source:
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadSource("invalid source: not UTF-8") from None
    if len(text.encode()) > MAX_SOURCE_BYTES:
        raise BadSource(f"invalid source: longer than {MAX_SOURCE_BYTES} bytes")
    if _CONTROL.search(text):
        raise BadSource("invalid source: control character or backslash")
    lowered = text[:8].lower()
    if lowered.startswith(("http:/", "https:/")):
        return _remote(text, allowed_hosts)
    segments = text.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise BadSource("invalid source: empty, '.' or '..' segment")
    if segments[0].startswith("_") or text in ORIGIN_ENDPOINTS:
        # the origin's own routes (`/_meta/...`, health, metrics) are never blobs
        raise NotFound("source not found")
    return OriginSource(text)


def _remote(text: str, allowed_hosts: tuple[str, ...]) -> RemoteSource:
    scheme, _, rest = text.partition(":")
    url = f"{scheme.lower()}://{rest.lstrip('/')}"  # proxies may fold // into /
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise BadSource("invalid source: malformed URL") from None
    if not host or parts.username is not None or parts.password is not None:
        raise BadSource("invalid source: URL needs a host and no credentials")
    if not host_allowed(host, allowed_hosts):
        raise Forbidden(f"source host {host!r} is not allowed")
    return RemoteSource(url, host)


def redact(raw_path: str) -> str:
    """The path for logs: the signature replaced, so logs cannot be replayed."""
    if raw_path.startswith(CDN_CGI):
        return raw_path
    _, _, rest = raw_path[1:].partition("/")
    return "/-/" + rest


def raw_source(path: str) -> str:
    """The source segment of a request path as sent (still percent-encoded)."""
    rest = path[len(CDN_CGI) :] if path.startswith(CDN_CGI) else path[1:].partition("/")[2]
    return rest.partition("/")[2]
