"""Generation jobs: submit, follow (server-sent events), cancel, fetch images."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from .._auth import Caller, Principal
from .._batcher import QueueFullError
from .._body import read_body
from .._errors import ERROR_RESPONSES, ServiceError
from .._jobs import TERMINAL, Job, JobQueue
from .._state import Service, ServiceState

__all__ = ["GenerateRequest", "router"]

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

#: An event stream re-checks its job at least this often, even with no change.
EVENT_RECHECK_S = 15.0


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0.0, le=30.0)
    width: int | None = Field(None, ge=16, le=4096)
    height: int | None = Field(None, ge=16, le=4096)
    seed: int | None = Field(None, ge=0)
    num_images: int = Field(1, ge=1, le=8)
    retry_blocked: int = Field(0, ge=0, le=16)
    control: Literal["canny", "blur", "depth"] | None = Field(
        None, description="ControlNet guidance; needs control_image."
    )
    control_image: str | None = Field(
        None,
        description="The image to follow, base64-encoded (for depth: the depth map, unless the "
        "server has a depth model). Screened by the safety classifier.",
    )
    control_scale: float = Field(1.0, ge=0.0, le=4.0, description="ControlNet strength (0: none).")


def _jobs(service: ServiceState) -> JobQueue:
    if service.jobs is None:
        raise ServiceError(
            404, "no_generator", "the service runs without generation (--generate-variant)"
        )
    return service.jobs


def _job(service: ServiceState, job_id: str, caller: Principal) -> Job:
    job = _jobs(service).get(job_id)
    # Another key's job is answered as missing: its existence is not theirs to know.
    if job is None or not caller.owns(job.owner):
        raise ServiceError(404, "job_not_found", f"no job {job_id}")
    return job


def _generation_params(request: GenerateRequest, service: ServiceState) -> dict[str, Any]:
    """The generator's arguments: the control image decoded from base64, and the
    ControlNet and depth models from the server's settings (never the client's)."""
    params = request.model_dump(exclude_none=True)
    if request.control_image is not None:
        try:
            params["control_image"] = base64.b64decode(request.control_image, validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(
                422, "request_invalid", "control_image must be base64-encoded image bytes"
            ) from None
    if request.control is not None:
        settings = service.settings
        model = settings.generate_control_models.get(request.control)
        if model is not None:
            params["control_model"] = model
        if request.control == "depth" and settings.generate_depth_model is not None:
            params["depth_model"] = settings.generate_depth_model
    return params


@router.post(
    "/generate",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
        }
    },
)
async def generate(request: Request, service: Service, caller: Caller) -> dict[str, Any]:
    """Queue a generation job; every image it returns has passed the safety gate.
    The body is bounded by max_upload_bytes (it may carry a control image)."""
    jobs = _jobs(service)
    body = await read_body(
        request, service.settings.max_upload_bytes, service.settings.body_timeout_s
    )
    try:
        parsed = GenerateRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ServiceError(422, "request_invalid", problems) from None
    try:
        job = jobs.submit(_generation_params(parsed, service), owner=caller.key_id)
    except QueueFullError as exc:
        raise ServiceError(429, "queue_full", str(exc), {"Retry-After": "5"}) from None
    return {"id": job.id, "status": job.status, "events": f"/v1/jobs/{job.id}/events"}


@router.get("/jobs/{job_id}")
async def job_status(job_id: str, service: Service, caller: Caller) -> dict[str, Any]:
    return _job(service, job_id, caller).to_dict()


@router.delete("/jobs/{job_id}")
async def job_cancel(job_id: str, service: Service, caller: Caller) -> dict[str, Any]:
    job = _jobs(service).cancel(_job(service, job_id, caller).id)
    if job is None:  # evicted in between
        raise ServiceError(404, "job_not_found", f"no job {job_id}")
    return job.to_dict()


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"description": "Server-sent events", "content": {"text/event-stream": {}}}},
)
async def job_events(job_id: str, service: Service, caller: Caller) -> Response:
    """Server-sent events: the job's state at every step, until it ends."""
    job, jobs = _job(service, job_id, caller), _jobs(service)

    async def stream() -> AsyncIterator[bytes]:
        seen = -1
        while True:
            if job.version != seen:
                seen = job.version
                yield f"data: {json.dumps(job.to_dict())}\n\n".encode()
                if job.status in TERMINAL:
                    return
            await jobs.changed(job, seen, EVENT_RECHECK_S)

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get(
    "/jobs/{job_id}/images/{position}",
    responses={200: {"description": "The allowed image", "content": {"image/png": {}}}},
)
async def job_image(job_id: str, position: int, service: Service, caller: Caller) -> Response:
    _job(service, job_id, caller)
    path = _jobs(service).image_path(job_id, position)
    if path is None:
        raise ServiceError(404, "image_not_found", "no such image (blocked images are never kept)")
    return FileResponse(path, media_type="image/png")
