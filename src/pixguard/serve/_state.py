"""The service's state, built in the FastAPI lifespan and reached through ``Depends``.

Routes take :data:`Service` (override :func:`get_service` in tests); nothing is global.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request

from ..classify import Classifier
from ..images import DecodeLimits
from ..index import Index
from ..policy import Policy
from ..review import ReviewQueue
from ._audit import AuditLog
from ._batcher import MicroBatcher
from ._jobs import JobQueue
from ._keys import KeyStore
from ._limits import RateLimiter
from ._metrics import Metrics
from ._sessions import SessionStore
from ._settings import ServeSettings

__all__ = ["ClassifierFactory", "Service", "ServiceState", "get_service", "make_lifespan"]

logger = logging.getLogger("pixguard.serve")

ClassifierFactory = Callable[[ServeSettings], Classifier]

SECONDS_PER_DAY = 86400
# Console sign-ins held in memory at once; beyond it the oldest is signed out.
MAX_SESSIONS = 10_000
#: The heavy-decode pool gets 1 thread per this many CPUs (at least one).
HEAVY_DECODE_SHARE = 2
#: Threads for the review queue and index (SQLite serialises writes anyway); the
#: audit log has its own group-commit writer (``AuditLog.append``).
STORE_THREADS = 2


T = TypeVar("T")


@dataclass
class ServiceState:
    settings: ServeSettings
    classifier: Classifier
    batcher: MicroBatcher
    keys: KeyStore
    audit: AuditLog
    metrics: Metrics
    decode_pool: ThreadPoolExecutor
    heavy_pool: ThreadPoolExecutor
    store_pool: ThreadPoolExecutor
    limiter: RateLimiter
    sessions: SessionStore
    review: ReviewQueue
    policy: Policy | None = None
    index: Index | None = None
    bank: Index | None = None
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: JobQueue | None = None
    ready: bool = False

    async def in_store(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on the store threads (audit queries, review
        queue, index): SQLite work never blocks the event loop nor competes with decoding."""
        return await asyncio.get_running_loop().run_in_executor(
            self.store_pool, partial(function, *args, **kwargs)
        )

    @property
    def healthy(self) -> bool:
        """Ready, and every worker thread still runs."""
        jobs_alive = self.jobs is None or self.jobs.alive
        return self.ready and self.batcher.alive and jobs_alive


async def get_service(request: Request) -> ServiceState:
    # async: FastAPI would run a plain function in a worker thread on every request.
    return request.app.state.service


Service = Annotated[ServiceState, Depends(get_service)]


def load_classifier(config: ServeSettings) -> Classifier:
    limits = DecodeLimits(
        max_bytes=config.max_upload_bytes,
        max_pixels=config.max_pixels,
        max_animation_pixels=config.max_file_pixels,
    )
    return Classifier.load(
        config.model,
        runtime=config.runtime,
        precision=config.precision,
        threshold=config.threshold,
        limits=limits,
    )


def _load_jobs(settings: ServeSettings, classifier: Classifier) -> JobQueue:
    from ..generate import Generator

    assert settings.generate_variant is not None
    # The gate is the service's own classifier: one model decides everything, and
    # Generator.load builds the one gate around it.
    generator = Generator.load(
        settings.generate_variant,
        config=settings.generate_config,
        classifier=classifier,
        safety_action=settings.generate_safety_action,
    )
    return JobQueue(
        generator,
        settings.data_dir / "generated",
        max_queued=settings.generate_queue_size,
        keep_jobs=settings.generate_keep_jobs,
        keep_s=settings.generate_keep_s,
    )


def _warn_if_open(settings: ServeSettings) -> None:
    if settings.auth == "off" and not settings.loopback:
        message = (
            f"AUTHENTICATION IS OFF on {settings.host}, which is not a loopback address: "
            "anyone who can reach this port can classify, read the audit log and add to "
            "the index. Use --auth auto or on with API keys (pixguard keys create)."
        )
        logger.warning(json.dumps({"event": "auth_off", "level": "warning", "message": message}))


def make_lifespan(
    settings: ServeSettings, factory: ClassifierFactory | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load models and open stores at start; drain and close them at shutdown."""
    factory = factory or load_classifier

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        _warn_if_open(settings)
        classifier = await loop.run_in_executor(None, factory, settings)
        cpus = max(1, os.cpu_count() or 1)
        metrics = Metrics()
        batcher = MicroBatcher(
            classifier,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            queue_size=settings.queue_size,
            on_batch=metrics.on_batch,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        service = ServiceState(
            settings=settings,
            classifier=classifier,
            batcher=batcher,
            keys=KeyStore(settings.data_dir / "keys.db"),
            audit=AuditLog(settings.data_dir / "audit.db"),
            metrics=metrics,
            decode_pool=ThreadPoolExecutor(cpus, thread_name_prefix="pixguard-decode"),
            heavy_pool=ThreadPoolExecutor(
                max(1, cpus // HEAVY_DECODE_SHARE), thread_name_prefix="pixguard-decode-heavy"
            ),
            # The stores and the audit log's writer have their own threads: nothing
            # else (event streams, decoding) can delay a decision's durable record.
            store_pool=ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="pixguard-store"),
            limiter=RateLimiter(settings.rate_limit_per_minute),
            sessions=SessionStore(ttl_s=settings.session_ttl_s, max_sessions=MAX_SESSIONS),
            review=ReviewQueue(
                settings.data_dir,
                lease_s=settings.review_lease_s,
                retention_s=settings.review_retention_days * SECONDS_PER_DAY,
                keep_for_training=settings.review_keep_for_training,
            ),
            policy=Policy.load(settings.policy) if settings.policy else None,
            index=Index.open(settings.index) if settings.index else None,
            bank=Index.open(settings.bank, create=False) if settings.bank else None,
        )
        if service.policy is not None:
            service.policy.check_labels(classifier.name, classifier.spec.label_names)
        if settings.generate_variant:
            service.jobs = await loop.run_in_executor(None, _load_jobs, settings, classifier)
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
                    "data_dir": str(settings.data_dir.resolve()),
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
            for pool in (service.decode_pool, service.heavy_pool, service.store_pool):
                pool.shutdown(wait=True)
            for store in (service.index, service.bank):
                if store is not None:
                    store.close()
            service.keys.close()
            service.audit.close()
            service.review.close()
            classifier.close()
            logger.info(json.dumps({"event": "stopped", "drained": True}))

    return lifespan


# A 1x1 PNG: decoded and classified once at start-up so the first request is warm.
_WARMUP_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fe"
    "a7359a680000000049454e44ae426082"
)
