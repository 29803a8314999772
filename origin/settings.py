"""The origin's one frozen settings object (DESIGN.md "Configuration")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from cdn_common.settings import ServiceSettings, split_list
from origin.auth import ApiKey, parse_api_key

StrList = Annotated[tuple[str, ...], NoDecode]


class OriginSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORIGIN_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8081, ge=0, le=65535, description="Bind port (0 picks a free one).")
    storage: str = Field(
        "file://./data/blobs",
        description="Blob store URL: file:///abs/dir (or file://./rel), s3://bucket/prefix, memory://.",
    )
    s3_endpoint: str | None = Field(
        None, description="S3 API endpoint for s3:// storage (else AWS_ENDPOINT_URL / AWS)."
    )
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = Field(
        (),
        description="Comma list of id:secret[:scope+scope][:prefix]; scopes read, write, delete.",
    )
    public_read: bool = Field(True, description="Serve GET/HEAD without an API key.")
    max_upload_mb: float = Field(50, gt=0, description="Largest accepted upload, in MiB.")
    memory_cache_mb: float = Field(
        64, ge=0, description="Memory for hot blobs of up to 1 MiB (local store); 0 turns it off."
    )
    purge_webhooks: StrList = Field((), description="Edge purge URLs called on overwrite/delete.")
    purge_key: str | None = Field(None, description="Bearer secret sent to the purge webhooks.")
    cache_control: str = Field(
        "public, max-age=3600, stale-while-revalidate=60, stale-if-error=86400",
        description="Cache-Control sent with every blob (the stale-* directives are what "
        "let edges serve stale: RFC 5861).",
    )

    @field_validator("purge_webhooks", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        urls = split_list(value)
        for url in urls if isinstance(urls, tuple | list) else ():
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return urls

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        items = split_list(value)
        if isinstance(items, tuple | list):
            return tuple(parse_api_key(str(item)) for item in items)
        return items

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://", "memory://")):
            raise ValueError("must start with file://, s3:// or memory://")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
