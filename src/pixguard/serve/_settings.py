"""Service settings: environment variables (PIXGUARD_*) and an optional TOML file."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .._files import MIB, default_data_dir
from ..models import DEFAULT_MODEL

__all__ = ["ServeSettings"]


class ServeSettings(BaseSettings):
    """Every setting of ``pixguard serve``. Each can be set as ``PIXGUARD_<NAME>``
    (for example ``PIXGUARD_MAX_BATCH_SIZE=32``) or in the ``--config`` TOML file;
    command-line options win over both."""

    model_config = SettingsConfigDict(env_prefix="PIXGUARD_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = DEFAULT_MODEL
    runtime: str = "auto"
    precision: str | None = None
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_upload_bytes: int = Field(20 * MIB, ge=1, description="Larger request bodies get 413.")
    max_video_bytes: int = Field(512 * MIB, ge=1, description="Larger video/* bodies get 413.")
    video_timeout_s: float = Field(
        300.0, gt=0.0, description="Decoding one video body longer than this gets 422."
    )
    max_pixels: int = Field(50_000_000, ge=1, description="Larger images get 422.")
    max_file_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Pixels decoded per file, all animation frames together.",
    )
    max_request_pixels: int = Field(
        200_000_000,
        ge=1,
        description="Pixels (from the headers) of all images of one request together.",
    )
    max_images_per_request: int = Field(32, ge=1)
    max_batch_size: int = Field(16, ge=1, description="Images per forward pass across requests.")
    max_wait_ms: float = Field(5.0, ge=0.0, description="How long a batch waits to fill.")
    queue_size: int = Field(128, ge=1, description="Images waiting for the model; beyond it, 429.")
    request_timeout_s: float = Field(30.0, gt=0.0, description="Slower requests get 504.")
    body_timeout_s: float = Field(
        30.0, gt=0.0, description="Time a client has to send a request body; then 408."
    )
    header_timeout_s: float = Field(
        10.0, gt=0.0, description="Time a client has to send a request's headers; then closed."
    )
    keep_alive_s: int = Field(
        5, ge=1, description="Idle keep-alive connections are closed after this."
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Larger request headers get 400.")
    http_parser: Literal["httptools", "h11"] = Field(
        "httptools",
        description="HTTP/1.1 parser: httptools (C, less CPU per request) or h11 (pure Python);"
        " both keep every limit here.",
    )
    max_connections: int = Field(512, ge=1, description="Open connections in all; beyond it, 503.")
    max_connections_per_client: int = Field(
        64, ge=1, description="Open connections from one address; beyond it, 429 and closed."
    )
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: required unless bound to loopback."
    )
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per API key per minute.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="keys.db, audit.db and generated images live here "
        "(default $XDG_DATA_HOME/pixguard or ~/.local/share/pixguard).",
    )
    store_images: bool = Field(False, description="Keep image bytes in the audit log.")
    # str, not Path: an index may be a folder or a Milvus URI (milvus://HOST:PORT/COLLECTION).
    index: str | None = Field(None, description="An index for /v1/index/search and /v1/index/add.")
    bank: str | None = Field(None, description="A known-bad bank checked on every classify.")
    generate_variant: str | None = Field(
        None,
        description="Serve /v1/generate with this SD3.5 variant, diffusers folder or single-file checkpoint.",
    )
    generate_config: str | None = Field(
        None,
        description="For a single-file checkpoint: the variant name, Hub repo or local diffusers folder giving its configs.",
    )
    generate_safety_action: Literal["block", "blur", "allow-flagged"] = "block"
    generate_control_models: dict[Literal["canny", "blur", "depth"], str] = Field(
        default_factory=dict,
        description="ControlNet folder or Hub repo per control kind (default: Stability's SD3.5 Large ControlNets).",
    )
    generate_depth_model: str | None = Field(
        None,
        description="A transformers depth-estimation model for depth control (default: clients send depth maps).",
    )
    generate_queue_size: int = Field(
        8, ge=1, description="Generation jobs waiting; beyond it, 429."
    )
    policy: Path | None = Field(
        None,
        description="A policy TOML file: every response and audit row gets its action; review goes to the queue.",
    )
    review_lease_s: float = Field(300.0, gt=0.0, description="How long a reviewer's claim lasts.")
    review_retention_days: float = Field(
        30.0, gt=0.0, description="Queued image bytes are deleted after this many days."
    )
    review_keep_for_training: bool = Field(
        True, description="Keep decided images (until retention) for `pixguard review export`."
    )
    session_ttl_s: float = Field(8 * 3600.0, gt=0.0, description="Console sign-in lifetime.")
    generate_keep_jobs: int = Field(
        100, ge=1, description="Finished jobs (and their images) kept; older ones are deleted."
    )
    generate_keep_s: float = Field(
        3600.0, gt=0.0, description="Finished jobs (and their images) are deleted after this."
    )
    config_file: Path | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = (
            init_settings.init_kwargs.get("config_file")
            if isinstance(init_settings, InitSettingsSource)
            else None
        )
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def auth_required(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not self.loopback)
