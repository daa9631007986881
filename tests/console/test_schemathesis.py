"""schemathesis against `/openapi.json`: requests generated from the published schema for
every operation (valid and invalid ones), as an admin, with objects named like the schema's
examples so some requests reach real records. No answer may be a 5xx. Seeded
(`derandomize`), so a failure reproduces."""

from __future__ import annotations

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from openbid.console.app import create_app
from tests.console.conftest import (
    PASSWORD,
    campaign_doc,
    console_config,
    creative_doc,
    open_context,
)

EXAMPLE = "spring-sale"  # the `examples` of every id in the schema


@pytest.fixture
def console_app(tmp_path):
    from fastapi.testclient import TestClient

    context = open_context(console_config(tmp_path))
    context.users.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    app = create_app(context)
    admin = context.users.create_user("admin", PASSWORD, "admin")
    _, token = context.users.create_token(admin.id)
    headers = {"authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        for path, body in (
            ("/api/v1/advertisers", {"id": EXAMPLE, "name": "Spring", "domain": "spring.example"}),
            ("/api/v1/creatives", creative_doc(EXAMPLE, advertiser_id=EXAMPLE)),
            ("/api/v1/campaigns", campaign_doc(EXAMPLE, advertiser_id=EXAMPLE)),
            (
                "/api/v1/line-items",
                {"id": EXAMPLE, "campaign_id": EXAMPLE, "creative_ids": [EXAMPLE]},
            ),
            ("/api/v1/publishers", {"id": EXAMPLE, "name": "Spring news"}),
            ("/api/v1/placements", {"id": EXAMPLE, "publisher_id": EXAMPLE, "name": "Top"}),
            (
                "/api/v1/sites",
                {
                    "id": EXAMPLE,
                    "publisher_id": EXAMPLE,
                    "kind": "site",
                    "domain": "spring.example",
                },
            ),
            ("/api/v1/demand-partners", {"id": EXAMPLE, "endpoint": "https://dsp.example/"}),
        ):
            assert client.post(path, json=body, headers=headers).status_code == 201, path
        # The registry's first read creates MLflow's tables (seconds): not during the fuzzing.
        assert client.get("/api/v1/models/ctr/versions", headers=headers).status_code == 200
    app.state.fuzz_headers = headers
    yield app
    context.close()


def test_no_server_error(console_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", console_app)
    headers = console_app.state.fuzz_headers
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 45
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_5xx(case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        no_5xx()
