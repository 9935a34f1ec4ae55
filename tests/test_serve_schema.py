"""schemathesis against the service's own OpenAPI schema: every route, generated
inputs, no 5xx, and answers that match what the schema promises.

schemathesis runs through its Python API (operations -> Hypothesis strategies), not
its pytest plugin: the plugin reaches into pytest's private attributes and broke on
pytest 9.2, while `as_strategy` is schemathesis' documented way to use it in
ordinary tests."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from pixguard import Classifier
from pixguard.serve import ServeSettings
from tests.serve_live import free_port, live_server

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, tiny_vit_folder):
    folder = tmp_path_factory.mktemp("schema")
    config = ServeSettings(data_dir=folder / "data", port=free_port(), index=str(folder / "index"))
    with live_server(config, lambda s: Classifier.load(tiny_vit_folder, runtime="torch")) as url:
        yield url


def _check_operation(operation, base_url: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)

    check()


def test_every_route_conforms_and_never_answers_5xx(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations, failures = [], []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"schema: {result.err()}")
            continue
        operations.append(result.ok())
    # Every path the schema declares is exercised (a schema that lost its routes, or a
    # loader that skipped them, would otherwise pass by testing nothing).
    declared = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert {(op.method.upper(), op.path) for op in operations} == declared
    assert len(declared) >= 10
    for operation in operations:
        try:
            _check_operation(operation, base_url)
        # Keep going, so one report names every failing route. schemathesis raises a
        # FailureGroup (a BaseExceptionGroup) when several checks fail on one case.
        except (Exception, FailureGroup) as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}")
    assert not failures, "\n\n".join(failures)
