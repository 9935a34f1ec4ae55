"""Orchestration of one request's images: decode in the pool, infer through the
batcher, answer and audit the decisions."""

from __future__ import annotations

import asyncio
import hashlib
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from .._exceptions import ImageTooLargeError
from ..classify import Prediction
from ..policy import Action
from ._batcher import QueueFullError
from ._body import read_images
from ._errors import ServiceError, status_for
from ._state import ServiceState

if TYPE_CHECKING:
    from ._auth import Principal

__all__ = ["decide", "predict"]


async def predict(service: ServiceState, images: list[tuple[str, bytes]]) -> list[Prediction]:
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


async def decide(
    request: Request, service: ServiceState, caller: Principal, embedding: bool
) -> JSONResponse:
    """Classify the uploaded images, audit every decision, answer per image.

    With a policy, each image also gets its action; those routed to ``review`` are
    queued (bytes and all) before the answer is sent."""
    images = await read_images(request, service)
    if len(images) > service.settings.max_images_per_request:
        raise ServiceError(
            413,
            "too_many_images",
            f"at most {service.settings.max_images_per_request} images per request",
        )
    predictions = await predict(service, images)
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
        if bank is not None:
            row.update(bank[position].to_dict())
        verdict = None
        if service.policy is not None:
            matched = bank is not None and bank[position].matched
            verdict = service.policy.decide(prediction, bank_match=matched)
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
    loop = asyncio.get_running_loop()
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
        item = await loop.run_in_executor(None, enqueue)
        row["review_item_id"] = item.id
    await loop.run_in_executor(None, service.audit.record, audit)
    if len(predictions) == 1 and predictions[0].error is not None:
        error = predictions[0].error
        status = 413 if isinstance(error, ImageTooLargeError) else status_for(error)
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
