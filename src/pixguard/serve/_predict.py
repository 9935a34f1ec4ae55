"""Orchestration of one request's images: decode in the pool, infer through the
batcher, answer and audit the decisions."""

from __future__ import annotations

import asyncio
import hashlib
import io
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image

from .._exceptions import ImageTooLargeError, TooManyPixelsError, VideoTooLargeError
from ..classify import Prediction, PreparedInput
from ..images import SUPPORTED_FORMATS, VideoLimits
from ..policy import Action, block_score, decide_worst
from ._batcher import QueueFullError
from ._body import read_body, read_images
from ._errors import ServiceError, status_for
from ._state import ServiceState

if TYPE_CHECKING:
    from ._auth import Principal

__all__ = ["HEAVY_PIXELS", "decide", "declared_pixels", "predict"]


#: Images declaring at least this many pixels decode in the service's small "heavy"
#: pool, so that a few huge uploads never hold every decode thread.
HEAVY_PIXELS = 4_000_000


def declared_pixels(data: bytes) -> int:
    """Width x height from the image header (no pixel is decoded); 0 when the header
    is not a supported image (decoding will then fail fast with the real reason)."""
    try:
        with Image.open(io.BytesIO(data), formats=_openable_formats()) as image:
            return image.width * image.height
    except Exception:
        return 0


def _openable_formats() -> tuple[str, ...]:
    """The supported formats this Pillow build can open (AVIF needs libavif)."""
    Image.init()
    return tuple(fmt for fmt in SUPPORTED_FORMATS if fmt in Image.OPEN)


async def _prepare(service: ServiceState, images: list[tuple[str, bytes]]) -> list[PreparedInput]:
    """Decode one request's images one after another (a request holds one decode
    thread at a time), heavy ones in the heavy pool, within the request's pixel budget."""
    loop = asyncio.get_running_loop()
    budget = service.settings.max_request_pixels
    prepared: list[PreparedInput] = []
    spent = 0
    for name, data in images:
        pixels = declared_pixels(data)
        if spent + pixels > budget:
            error = TooManyPixelsError(
                f"the request's images exceed its {budget:,}-pixel budget", source=name
            )
            prepared.append(PreparedInput(name, error=error))
            continue
        spent += pixels
        pool = service.heavy_pool if pixels >= HEAVY_PIXELS else service.decode_pool
        prepared.append(await loop.run_in_executor(pool, service.classifier.prepare, data))
    return prepared


async def predict(service: ServiceState, images: list[tuple[str, bytes]]) -> list[Prediction]:
    """Predictions for one request's images. Room in the queue is reserved first
    (429 before any decoding), and ``request_timeout_s`` covers decoding too (504)."""
    timeout = service.settings.request_timeout_s
    try:
        with service.batcher.admit(len(images)):
            async with asyncio.timeout(timeout):
                return await _predict_admitted(service, images)
    except QueueFullError as exc:
        raise ServiceError(429, "queue_full", str(exc), {"Retry-After": "1"}) from None
    except TimeoutError:
        # Queued inputs were cancelled with the awaiting futures; a decode already
        # running in a thread finishes there, but the client has its answer.
        raise ServiceError(504, "timeout", f"no result within {timeout:g} s") from None


async def _predict_admitted(
    service: ServiceState, images: list[tuple[str, bytes]]
) -> list[Prediction]:
    prepared = await _prepare(service, images)
    futures: list[Future[Prediction] | None] = []
    try:
        for item in prepared:
            futures.append(None if item.error is not None else service.batcher.submit(item))
    except QueueFullError:
        for future in futures:
            if future is not None:
                future.cancel()
        raise
    service.metrics.queue_depth.set(service.batcher.depth)
    try:
        done = await asyncio.gather(*[asyncio.wrap_future(f) for f in futures if f is not None])
    except asyncio.CancelledError:
        for future in futures:
            if future is not None:
                future.cancel()
        raise
    results, finished = [], iter(done)
    for item, future in zip(prepared, futures, strict=True):
        results.append(
            next(finished) if future is not None else service.classifier.predict_prepared([item])[0]
        )
    return results


async def decide(
    request: Request,
    service: ServiceState,
    caller: Principal,
    embedding: bool,
    *,
    explain: bool = False,
    stop_at_block: bool = False,
) -> JSONResponse:
    """Classify the uploaded images (or one ``video/*`` body), audit every
    decision, answer per input.

    With ``explain``, each image also gets its ``explanation`` grid (computed on
    the service's eager explanation model, outside the batcher). With a policy,
    each input also gets its action (a video's follows its worst segment); those
    routed to ``review`` are queued (bytes and all) before the answer is sent."""
    loop = asyncio.get_running_loop()
    extras: list[dict[str, Any]] | None = None
    if _content_type(request).startswith("video/"):
        data = await read_body(
            request, service.settings.max_video_bytes, service.settings.body_timeout_s
        )
        if not data:
            raise ServiceError(422, "image_empty", "the request body is empty")
        stop_at = None
        if stop_at_block:
            stop_at = (
                block_score(service.policy, service.classifier.name)
                if service.policy is not None
                else service.classifier.threshold
            )
        limits = VideoLimits(max_seconds=service.settings.video_timeout_s)
        video = partial(service.classifier.predict_video, data, stop_at=stop_at, limits=limits)
        images = [("body", data)]
        predictions: list[Prediction] = [await loop.run_in_executor(service.decode_pool, video)]
    else:
        images = await read_images(request, service)
        if explain:
            explained = await loop.run_in_executor(
                service.decode_pool, service.classifier.explain, [data for _, data in images]
            )
            predictions = [item.prediction for item in explained]
            extras = [{"explanation": item.to_dict()} for item in explained]
        else:
            predictions = await predict(service, images)
    return await _answer(request, service, caller, images, predictions, embedding, extras)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _answer(
    request: Request,
    service: ServiceState,
    caller: Principal,
    images: list[tuple[str, bytes]],
    predictions: list[Prediction],
    embedding: bool,
    extras: list[dict[str, Any]] | None,
) -> JSONResponse:
    request_id = request.state.request_id
    bank = service.bank.match(predictions) if service.bank is not None else None
    rows, audit, to_queue = [], [], []
    for position, ((name, data), prediction) in enumerate(zip(images, predictions, strict=True)):
        digest = hashlib.sha256(data).hexdigest()
        row: dict[str, Any] = {
            "index": position,
            "filename": name,
            "sha256": digest,
            **prediction.to_dict(include_embedding=embedding),
        }
        row.pop("path", None)
        if extras is not None:
            row.update(extras[position])
        if bank is not None:
            row.update(bank[position].to_dict())
        verdict = None
        if service.policy is not None:
            matched = bank is not None and bank[position].matched
            verdict = decide_worst(service.policy, prediction, bank_match=matched)
            row.update(verdict.to_dict())
            if verdict.action is Action.review:
                to_queue.append((row, name, data, digest, prediction, verdict, matched))
        rows.append(row)
        if prediction.label:
            service.metrics.decisions.labels(prediction.label).inc()
        audit.append(
            {
                "request_id": request_id,
                "key_id": caller.key_id,
                "sha256": digest,
                "label": prediction.label,
                "nsfw_score": prediction.nsfw_score,
                "model": prediction.model,
                "threshold": prediction.threshold,
                "error": prediction.error.code if prediction.error else None,
                "action": verdict.action.value if verdict else None,
                "policy_version": verdict.policy_version if verdict else None,
                "image": data if service.settings.store_images else None,
            }
        )
    for row, name, data, digest, prediction, verdict, matched in to_queue:
        enqueue = partial(
            service.review.enqueue,
            data,
            prediction,
            verdict,
            source=name,
            key_id=caller.key_id,
            bank_match=matched,
            sha256=digest,
        )
        item = await service.in_store(enqueue)
        row["review_item_id"] = item.id
    await service.audit.append(audit)
    if len(predictions) == 1 and predictions[0].error is not None:
        error = predictions[0].error
        too_large = isinstance(error, ImageTooLargeError | VideoTooLargeError)
        status = 413 if too_large else status_for(error)
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
