"""The HTTP service: FastAPI over the same Classifier, with batching, auth and audit."""

from ._app import ServiceError, ServiceState, create_app, get_service
from ._audit import AuditLog
from ._batcher import MicroBatcher, QueueFullError
from ._keys import ApiKey, KeyStore
from ._settings import ServeSettings

__all__ = [
    "ApiKey",
    "AuditLog",
    "KeyStore",
    "MicroBatcher",
    "QueueFullError",
    "ServeSettings",
    "ServiceError",
    "ServiceState",
    "create_app",
    "get_service",
]
