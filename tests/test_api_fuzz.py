"""Property-based fuzzing of every operation in the OpenAPI schema with schemathesis: never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from api_support import api_settings
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import utils as conjecture_utils
from schemathesis.checks import not_a_server_error
from support import Oracle

from sspp_unet_api.app.main import create_app

schemathesis.experimental.OPEN_API_3_1.enable()
EXAMPLES_PER_OPERATION = 20


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(api_settings(tmp / "data", tmp / "unused.pt", max_request_bytes=1 << 20), Oracle())
    return schemathesis.from_dict(app.openapi(), app=app, data_generation_methods=schemathesis.DataGenerationMethod.all())


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error(case) -> None:
    response = case.call_asgi()
    case.validate_response(response, checks=(not_a_server_error,))


def test_hypothesis_version_works_with_schemathesis() -> None:
    """hypothesis 6.170 dropped ``many.more()``, which hypothesis-jsonschema 0.23 (under schemathesis 3) calls."""
    assert hasattr(conjecture_utils.many, "more"), "install hypothesis<6.170 (see requirements-dev.txt)"


def test_schema_covers_every_endpoint(tmp_path: Path) -> None:
    """The fuzzed schema holds the operations the fuzzer must reach."""
    app = create_app(api_settings(tmp_path / "data", tmp_path / "unused.pt"), Oracle())
    operations = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    assert {("POST", "/upload"), ("POST", "/predict"), ("GET", "/download_sample"), ("DELETE", "/uploads/{upload_id}"),
            ("GET", "/predictions/{prediction_id}/overlay")} <= operations
