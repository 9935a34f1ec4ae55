"""The FastAPI application: routes, limits, auth, metrics and the audit log.

Models load in the lifespan; routes reach settings and models through ``Depends``
(override ``get_service`` in tests). Errors are JSON ``{code, message, request_id}``
with the status mapped from pixguard's error codes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from pydantic import Field as PydanticField

from .._exceptions import (
    ImageError,
    ImageTooLargeError,
    PixguardError,
)
from .._version import __version__
from ..classify import Classifier, Prediction
from ..images import DecodeLimits
from ..index import Index
from ..models import list_models
from ._audit import AuditLog
from ._batcher import MicroBatcher, QueueFullError
from ._jobs import TERMINAL, JobQueue
from ._keys import ApiKey, KeyStore
from ._settings import ServeSettings

__all__ = ["ServiceError", "ServiceState", "create_app", "get_service"]

logger = logging.getLogger("pixguard.serve")

# pixguard error code -> HTTP status; anything not listed is 422 for images, 500 otherwise.
_STATUS = {
    "image_too_large": 413,
    "image_too_many_pixels": 422,
    "index_model_mismatch": 409,
    "index_entry_not_found": 404,
    "index_error": 409,
}


class ServiceError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pixguard_requests_total", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pixguard_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "pixguard_batch_size",
            "Images per forward pass",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.inference = Histogram(
            "pixguard_inference_seconds", "Forward pass time", registry=self.registry
        )
        self.queue_depth = Gauge(
            "pixguard_queue_depth", "Images waiting for the model", registry=self.registry
        )
        self.decisions = Counter(
            "pixguard_decisions_total", "Images classified", ["label"], registry=self.registry
        )


class _RateLimiter:
    """A token bucket per API key."""

    def __init__(self, per_minute: int) -> None:
        self.capacity, self.rate = float(per_minute), per_minute / 60.0
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: int) -> float:
        """0 when allowed, else seconds until the next request would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self.rate


@dataclass
class ServiceState:
    settings: ServeSettings
    classifier: Classifier
    batcher: MicroBatcher
    keys: KeyStore
    audit: AuditLog
    metrics: _Metrics
    decode_pool: ThreadPoolExecutor
    limiter: _RateLimiter
    index: Index | None = None
    bank: Index | None = None
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: JobQueue | None = None
    ready: bool = False


def get_service(request: Request) -> ServiceState:
    return request.app.state.service


Service = Annotated[ServiceState, Depends(get_service)]


def _authorize(request: Request, service: Service) -> ApiKey | None:
    header = request.headers.get("authorization", "")
    if not header:
        if service.settings.auth_required:
            raise ServiceError(
                401, "unauthorized", "an API key is required (Authorization: Bearer <key>)"
            )
        return None
    scheme, _, token = header.partition(" ")
    key = service.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise ServiceError(401, "unauthorized", "the API key is invalid or revoked")
    wait = service.limiter.acquire(key.id)
    if wait:
        raise ServiceError(
            429,
            "rate_limited",
            "too many requests for this key",
            {"Retry-After": str(max(1, round(wait)))},
        )
    return key


Caller = Annotated[ApiKey | None, Depends(_authorize)]


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(
            413, "image_too_large", f"the request body is larger than {limit:,} bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(
                413, "image_too_large", f"the request body is larger than {limit:,} bytes"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was read
    return body


async def _images(request: Request, service: Service) -> list[tuple[str, bytes]]:
    """The uploaded images: a raw body (image/*) or multipart form files."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, service.settings.max_upload_bytes)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if not body:
            raise ServiceError(422, "image_empty", "the request body is empty")
        return [("body", body)]
    if content_type == "multipart/form-data":
        form = await request.form(max_files=service.settings.max_images_per_request)
        files = [
            (value.filename or key, await value.read())
            for key, value in form.multi_items()
            if hasattr(value, "read")
        ]
        if not files:
            raise ServiceError(422, "image_empty", "the form holds no files")
        return files
    raise ServiceError(
        415, "unsupported_media_type", "send an image body (image/*) or multipart/form-data files"
    )


async def _predict(service: ServiceState, images: list[tuple[str, bytes]]) -> list[Prediction]:
    loop = asyncio.get_running_loop()
    prepared = await asyncio.gather(
        *[
            loop.run_in_executor(service.decode_pool, service.classifier.prepare, data)
            for _, data in images
        ]
    )
    futures = []
    try:
        for item in prepared:
            futures.append(None if item.error is not None else service.batcher.submit(item))
    except QueueFullError as exc:
        for future in futures:
            if future is not None:
                future.cancel()
        raise ServiceError(429, "queue_full", str(exc), {"Retry-After": "1"}) from None
    service.metrics.queue_depth.set(service.batcher.depth)
    try:
        done = await asyncio.wait_for(
            asyncio.gather(*[asyncio.wrap_future(f) for f in futures if f is not None]),
            timeout=service.settings.request_timeout_s,
        )
    except TimeoutError:
        for future in futures:
            if future is not None:
                future.cancel()
        raise ServiceError(
            504, "timeout", f"no result within {service.settings.request_timeout_s} s"
        ) from None
    results, finished = [], iter(done)
    for item, future in zip(prepared, futures, strict=True):
        results.append(
            next(finished) if future is not None else service.classifier.predict_prepared([item])[0]
        )
    return results


def _status_for(error: PixguardError) -> int:
    if error.code in _STATUS:
        return _STATUS[error.code]
    return 422 if isinstance(error, ImageError) else 500


def create_app(
    settings: ServeSettings,
    *,
    classifier_factory: Callable[[ServeSettings], Classifier] | None = None,
) -> FastAPI:
    """The service app. ``classifier_factory`` replaces model loading (tests)."""

    def load_classifier(config: ServeSettings) -> Classifier:
        limits = DecodeLimits(max_bytes=config.max_upload_bytes, max_pixels=config.max_pixels)
        return Classifier.load(
            config.model,
            runtime=config.runtime,
            precision=config.precision,
            threshold=config.threshold,
            limits=limits,
        )

    factory = classifier_factory or load_classifier

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        classifier = await loop.run_in_executor(None, factory, settings)
        metrics = _Metrics()

        def on_batch(size: int, seconds: float) -> None:
            metrics.batch_size.observe(size)
            metrics.inference.observe(seconds)

        batcher = MicroBatcher(
            classifier,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            queue_size=settings.queue_size,
            on_batch=on_batch,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        service = ServiceState(
            settings=settings,
            classifier=classifier,
            batcher=batcher,
            keys=KeyStore(settings.data_dir / "keys.db"),
            audit=AuditLog(settings.data_dir / "audit.db"),
            metrics=metrics,
            decode_pool=ThreadPoolExecutor(
                max(1, os.cpu_count() or 1), thread_name_prefix="pixguard-decode"
            ),
            limiter=_RateLimiter(settings.rate_limit_per_minute),
            index=Index.open(settings.index) if settings.index else None,
            bank=Index.open(settings.bank, create=False) if settings.bank else None,
        )
        if settings.generate_variant:
            from ..generate import Generator, SafetyGate

            # The gate is the service's own classifier: one model decides everything.
            generator = await loop.run_in_executor(
                None,
                lambda: Generator.load(
                    settings.generate_variant,
                    config=settings.generate_config,
                    classifier=classifier,
                    safety_action=settings.generate_safety_action,
                ),
            )
            generator.gate = SafetyGate(classifier, action=settings.generate_safety_action)
            service.jobs = JobQueue(
                generator, settings.data_dir / "generated", max_queued=settings.generate_queue_size
            )
        app.state.service = service
        # Warm up: the first real request must not pay for lazy initialisation.
        await loop.run_in_executor(None, classifier.predict, [bytes(_WARMUP_PNG)])
        service.ready = True
        logger.info(
            json.dumps(
                {
                    "event": "ready",
                    "model": classifier.name,
                    "runtime": classifier.runtime_name,
                    "auth_required": settings.auth_required,
                }
            )
        )
        try:
            yield
        finally:
            service.ready = False
            await loop.run_in_executor(None, batcher.close)  # finishes accepted work
            if service.jobs is not None:
                await loop.run_in_executor(None, service.jobs.close)
            service.decode_pool.shutdown(wait=True)
            for store in (service.index, service.bank):
                if store is not None:
                    store.close()
            service.keys.close()
            service.audit.close()
            classifier.close()
            logger.info(json.dumps({"event": "stopped", "drained": True}))

    app = FastAPI(title="pixguard", version=__version__, lifespan=lifespan)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Any]) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id})
            response = JSONResponse(
                {"code": "internal_error", "message": "internal error", "request_id": request_id},
                500,
            )
        response.headers["X-Request-ID"] = request_id
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.metrics.requests.labels(path, str(response.status_code)).inc()
            service.metrics.latency.labels(path).observe(time.perf_counter() - started)
        logger.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "ms": round(1000 * (time.perf_counter() - started), 1),
                }
            )
        )
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        body = {
            "code": exc.code,
            "message": exc.message,
            "request_id": getattr(request.state, "request_id", None),
        }
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(PixguardError)
    async def pixguard_error(request: Request, exc: PixguardError) -> JSONResponse:
        body = {
            "code": exc.code,
            "message": str(exc),
            "request_id": getattr(request.state, "request_id", None),
        }
        return JSONResponse(body, status_code=_status_for(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        ready = bool(service and service.ready)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(service: Service) -> Response:
        service.metrics.queue_depth.set(service.batcher.depth)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(service: Service, caller: Caller) -> dict[str, Any]:
        spec = service.classifier.spec
        return {
            "loaded": {
                "name": spec.name,
                "runtime": service.classifier.runtime_name,
                "threshold": service.classifier.threshold,
                "labels": list(spec.label_names),
                "nsfw_labels": list(spec.nsfw_labels),
                "embedding_dim": spec.embedding_dim,
            },
            "registry": [
                {
                    "name": s.name,
                    "source": f"{s.source}:{s.location}",
                    "architecture": s.architecture,
                }
                for s in list_models()
            ],
        }

    async def _decide(
        request: Request, service: ServiceState, caller: ApiKey | None, embedding: bool
    ) -> JSONResponse:
        images = await _images(request, service)
        if len(images) > service.settings.max_images_per_request:
            raise ServiceError(
                413,
                "too_many_images",
                f"at most {service.settings.max_images_per_request} images per request",
            )
        predictions = await _predict(service, images)
        request_id = request.state.request_id
        bank = service.bank.match(predictions) if service.bank is not None else None
        rows, audit = [], []
        for position, ((name, data), prediction) in enumerate(
            zip(images, predictions, strict=True)
        ):
            digest = hashlib.sha256(data).hexdigest()
            row = {
                "index": position,
                "filename": name,
                "sha256": digest,
                **prediction.to_dict(include_embedding=embedding),
            }
            row.pop("path", None)
            if bank is not None:
                row.update(bank[position].to_dict())
            rows.append(row)
            if prediction.label:
                service.metrics.decisions.labels(prediction.label).inc()
            audit.append(
                {
                    "request_id": request_id,
                    "key_id": caller.id if caller else None,
                    "sha256": digest,
                    "label": prediction.label,
                    "nsfw_score": prediction.nsfw_score,
                    "model": prediction.model,
                    "threshold": prediction.threshold,
                    "error": prediction.error.code if prediction.error else None,
                    "image": data if service.settings.store_images else None,
                }
            )
        await asyncio.get_running_loop().run_in_executor(None, service.audit.record, audit)
        if len(predictions) == 1 and predictions[0].error is not None:
            error = predictions[0].error
            status = 413 if isinstance(error, ImageTooLargeError) else _status_for(error)
            return JSONResponse(
                {
                    "code": error.code,
                    "message": str(error),
                    "request_id": request_id,
                    "results": rows,
                },
                status_code=status,
            )
        return JSONResponse(
            {"request_id": request_id, "model": service.classifier.name, "results": rows}
        )

    @app.post("/v1/classify")
    async def classify(
        request: Request,
        service: Service,
        caller: Caller,
        embedding: Annotated[bool, Query(description="Include each image's embedding.")] = False,
    ) -> JSONResponse:
        """Classify one image (raw body) or several (multipart). Per image: label,
        nsfw_score, probabilities, model, threshold, sha256 and an error if any."""
        return await _decide(request, service, caller, embedding)

    @app.post("/v1/embed")
    async def embed(request: Request, service: Service, caller: Caller) -> JSONResponse:
        """Embeddings (pooled pre-logits, float32 as JSON numbers) of the uploaded images."""
        return await _decide(request, service, caller, True)

    @app.get("/v1/decisions")
    async def decisions(
        service: Service,
        caller: Caller,
        label: str | None = None,
        key_id: int | None = None,
        sha256: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after_id: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The audit log, oldest first; pass the last ``id`` as ``after_id`` for the next page."""
        if caller is None and service.settings.auth_required:
            raise ServiceError(401, "unauthorized", "an API key is required")
        rows = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: service.audit.query(
                label=label,
                key_id=key_id,
                sha256=sha256,
                since=since,
                until=until,
                limit=limit,
                after_id=after_id,
            ),
        )
        return {"decisions": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}

    @app.post("/v1/index/search")
    async def index_search(
        request: Request,
        service: Service,
        caller: Caller,
        k: Annotated[int, Query(ge=1, le=1000)] = 10,
        min_similarity: float | None = None,
    ) -> dict[str, Any]:
        if service.index is None:
            raise ServiceError(404, "no_index", "the service runs without an index (--index DIR)")
        (_, data), *_ = await _images(request, service)
        prediction = (await _predict(service, [("body", data)]))[0]
        prediction.raise_for_error()

        def search() -> list[dict[str, Any]]:
            with service.index_lock:
                return [
                    h.to_dict()
                    for h in service.index.search(
                        prediction.embedding, k=k, min_similarity=min_similarity
                    )
                ]  # type: ignore[union-attr,arg-type]

        return {
            "request_id": request.state.request_id,
            "hits": await asyncio.get_running_loop().run_in_executor(None, search),
        }

    @app.post("/v1/index/add")
    async def index_add(
        request: Request, service: Service, caller: Caller, tags: str = ""
    ) -> dict[str, Any]:
        if service.index is None:
            raise ServiceError(404, "no_index", "the service runs without an index (--index DIR)")
        images = await _images(request, service)

        def add() -> dict[str, Any]:
            with service.index_lock:
                report = service.index.add_images(
                    [data for _, data in images],
                    service.classifier,  # type: ignore[union-attr]
                    tags=[t for t in tags.split(",") if t],
                )
            return report.to_dict()

        return {
            "request_id": request.state.request_id,
            **await asyncio.get_running_loop().run_in_executor(None, add),
        }

    def _jobs(service: ServiceState) -> JobQueue:
        if service.jobs is None:
            raise ServiceError(
                404, "no_generator", "the service runs without generation (--generate-variant)"
            )
        return service.jobs

    def _job(service: ServiceState, job_id: str) -> Any:
        job = _jobs(service).get(job_id)
        if job is None:
            raise ServiceError(404, "job_not_found", f"no job {job_id}")
        return job

    @app.post("/v1/generate", status_code=202)
    async def generate(
        request: GenerateRequest, service: Service, caller: Caller
    ) -> dict[str, Any]:
        """Queue a generation job; every image it returns has passed the safety gate."""
        jobs = _jobs(service)
        try:
            job = jobs.submit(request.model_dump(exclude_none=True))
        except QueueFullError as exc:
            raise ServiceError(429, "queue_full", str(exc), {"Retry-After": "5"}) from None
        return {"id": job.id, "status": job.status, "events": f"/v1/jobs/{job.id}/events"}

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, service: Service, caller: Caller) -> dict[str, Any]:
        return _job(service, job_id).to_dict()

    @app.delete("/v1/jobs/{job_id}")
    async def job_cancel(job_id: str, service: Service, caller: Caller) -> dict[str, Any]:
        _job(service, job_id)
        return _jobs(service).cancel(job_id).to_dict()  # type: ignore[union-attr]

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, service: Service, caller: Caller) -> Response:
        """Server-sent events: the job's state at every step, until it ends."""
        from fastapi.responses import StreamingResponse

        job, jobs = _job(service, job_id), _jobs(service)

        async def stream() -> AsyncIterator[bytes]:
            seen = -1
            loop = asyncio.get_running_loop()
            while True:
                if job.version != seen:
                    seen = job.version
                    yield f"data: {json.dumps(job.to_dict())}\n\n".encode()
                    if job.status in TERMINAL:
                        return
                await loop.run_in_executor(None, jobs.wait_change, job, seen, 1.0)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/jobs/{job_id}/images/{position}")
    async def job_image(job_id: str, position: int, service: Service, caller: Caller) -> Response:
        from fastapi.responses import FileResponse

        _job(service, job_id)
        path = _jobs(service).image_path(job_id, position)
        if path is None:
            raise ServiceError(
                404, "image_not_found", "no such image (blocked images are never kept)"
            )
        return FileResponse(path, media_type="image/png")

    return app


class GenerateRequest(BaseModel):
    prompt: str = PydanticField(min_length=1, max_length=2000)
    negative_prompt: str | None = None
    steps: int | None = PydanticField(None, ge=1, le=200)
    guidance: float | None = PydanticField(None, ge=0.0, le=30.0)
    width: int | None = PydanticField(None, ge=16, le=4096)
    height: int | None = PydanticField(None, ge=16, le=4096)
    seed: int | None = PydanticField(None, ge=0)
    num_images: int = PydanticField(1, ge=1, le=8)
    retry_blocked: int = PydanticField(0, ge=0, le=16)


# A 1x1 PNG: decoded and classified once at start-up so the first request is warm.
_WARMUP_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fe"
    "a7359a680000000049454e44ae426082"
)
