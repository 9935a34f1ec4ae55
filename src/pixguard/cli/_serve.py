"""``pixguard serve`` and ``pixguard keys``."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import EXIT_USAGE, DataDirOption, fail, stderr

__all__ = ["keys_app", "serve_command"]

keys_app = typer.Typer(
    help="API keys for the HTTP service (stored only as hashes).", no_args_is_help=True
)


def _key_store(data_dir: Path | None) -> Any:
    from .._files import default_data_dir
    from ..serve import KeyStore

    return KeyStore((data_dir or default_data_dir()) / "keys.db")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("{"):
            return message
        return json.dumps(
            {"level": record.levelname.lower(), "logger": record.name, "message": message}
        )


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default 127.0.0.1; others require API keys).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name, folder or hf-hub:owner/repo.")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option(help="auto, torch, onnxruntime or openvino.")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or int8.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with any ServeSettings field.")
    ] = None,
    data_dir: DataDirOption = None,
    auth: Annotated[
        str | None, typer.Option(help="auto (keys required off loopback), on or off.")
    ] = None,
    index: Annotated[
        str | None, typer.Option(help="Serve /v1/index/* over this index (folder or milvus: URI).")
    ] = None,
    generate_variant: Annotated[
        str | None,
        typer.Option(
            help="Serve /v1/generate with this SD3.5 variant, diffusers folder or single-file checkpoint."
        ),
    ] = None,
    generate_config: Annotated[
        str | None,
        typer.Option(
            help="Configs for a single-file --generate-variant (variant, repo or folder)."
        ),
    ] = None,
    bank: Annotated[
        str | None, typer.Option(help="Check every image against this known-bad bank.")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="A policy TOML file: every response and audit row gets its action; review goes to the queue."
        ),
    ] = None,
) -> None:
    """Run the HTTP API (FastAPI + uvicorn; OpenAPI at /docs).

    Settings come from PIXGUARD_* environment variables and --config; the options
    here override both.
    """
    import uvicorn
    from pydantic import ValidationError

    from ..serve import ServeSettings, create_app
    from ..serve._protocol import bounded_protocol

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "model": model,
            "runtime": runtime,
            "precision": precision,
            "data_dir": data_dir,
            "auth": auth,
            "index": index,
            "bank": bank,
            "policy": policy,
            "generate_variant": generate_variant,
            "generate_config": generate_config,
            "config_file": config,
        }.items()
        if v is not None
    }
    try:
        settings = ServeSettings(**overrides)
    except ValidationError as exc:
        stderr.print(f"[bold red]error[/] invalid settings: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if settings.policy is not None:
        # Refuse a bad policy here, with its code, before the model loads.
        from .._exceptions import PixguardError
        from ..policy import Policy

        try:
            Policy.load(settings.policy)
        except PixguardError as exc:
            raise fail(exc) from None
    stderr.print(f"data dir: {settings.data_dir.resolve()} (keys.db, audit.db, generated/)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the app logs each request as JSON with its request id
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
        http=bounded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
    )


class KeyRole(StrEnum):
    """``serve.Role``'s values, without importing the service to parse options (tested equal)."""

    client = "client"
    reviewer = "reviewer"
    admin = "admin"


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    data_dir: DataDirOption = None,
    role: Annotated[
        KeyRole,
        typer.Option(
            case_sensitive=False,
            help="client: classify, own rows only; reviewer: also the review queue; admin: everything.",
        ),
    ] = KeyRole.client,
) -> None:
    """Create a key; the token is printed once and never stored."""
    store = _key_store(data_dir)
    key, token = store.create(name, role.value)
    store.close()
    typer.echo(json.dumps({"id": key.id, "name": key.name, "role": key.role.value, "token": token}))


@keys_app.command("list")
def list_keys(data_dir: DataDirOption = None) -> None:
    store = _key_store(data_dir)
    typer.echo(
        json.dumps(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "role": k.role.value,
                    "created": k.created,
                    "revoked": k.revoked,
                }
                for k in store.list()
            ],
            indent=2,
        )
    )
    store.close()


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[int, typer.Argument()], data_dir: DataDirOption = None) -> None:
    store = _key_store(data_dir)
    revoked = store.revoke(key_id)
    store.close()
    if not revoked:
        stderr.print(f"[bold red]error[/] no active key {key_id}")
        raise typer.Exit(EXIT_USAGE)
    typer.echo(json.dumps({"revoked": key_id}))
