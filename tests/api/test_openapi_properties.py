"""A property-based run over the API's own `/openapi.json` (schemathesis): for generated
valid and invalid requests to every operation, no 5xx, and every response conforms to
the document (status, content type, body schema), and no operation ignores its token.
Bounded (a few examples per operation and mode) to run in well under a minute."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import ignored_auth

from api.server import ApiService
from tests.conftest import Fleet

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ignored_auth]
EXAMPLES = 6


@pytest.mark.slow
def test_no_server_error_and_every_response_matches_the_document(
    api: ApiService, fleet: Fleet, token: str
) -> None:
    document = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = [result.ok() for result in document.get_all_operations()]
    assert len(operations) == 20  # 18 with a token, healthz, metrics
    for operation in operations:
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                       checks=CHECKS, timeout=30)

            try:
                check()
            except Unsatisfiable:
                # nothing to make invalid (no parameters, no body): only valid requests
                assert mode is GenerationMode.NEGATIVE, operation.label
