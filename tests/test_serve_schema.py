"""schemathesis against the service's own OpenAPI schema: every route, generated
inputs, no 5xx, and answers that match what the schema promises."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from pixguard import Classifier
from pixguard.serve import ServeSettings
from tests.serve_live import free_port, live_server


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, tiny_vit_folder):
    folder = tmp_path_factory.mktemp("schema")
    config = ServeSettings(data_dir=folder / "data", port=free_port(), index=str(folder / "index"))
    with live_server(config, lambda s: Classifier.load(tiny_vit_folder, runtime="torch")) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(base_url):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_conforms_and_never_answers_5xx(case, base_url):
    case.call_and_validate(
        base_url=base_url,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        timeout=30,
    )
