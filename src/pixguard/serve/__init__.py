"""The HTTP service: FastAPI over the same Classifier, with batching, auth and audit."""

from ._app import ServiceError, ServiceState, create_app, get_service
from ._audit import AuditLog
from ._auth import Principal
from ._batcher import MicroBatcher, QueueFullError
from ._keys import ApiKey, KeyStore, Role
from ._settings import ServeSettings

__all__ = [
    "ApiKey",
    "AuditLog",
    "KeyStore",
    "MicroBatcher",
    "Principal",
    "QueueFullError",
    "Role",
    "ServeSettings",
    "ServiceError",
    "ServiceState",
    "create_app",
    "get_service",
]
