"""The console on a fresh SQLite catalog and event log: an admin, two advertisers and two
publishers with a user each, every object created through the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from openbid.config import load_config
from openbid.console.app import create_app
from openbid.console.context import ConsoleContext

PASSWORD = "correct horse battery"
DAY_MICROS = 86_400_000_000
START = 1_800_000_000_000_000


def console_config(tmp_path, **console):
    config = load_config(environ={})
    return msgspec.structs.replace(
        config,
        stores=msgspec.structs.replace(
            config.stores, catalog_url=f"sqlite:///{tmp_path}/catalog.db"
        ),
        events=msgspec.structs.replace(config.events, dir=str(tmp_path / "events")),
        console=msgspec.structs.replace(config.console, **console),
        models=msgspec.structs.replace(
            config.models,
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
            artifact_location=str(tmp_path / "mlflow-artifacts"),
            store_url=str(tmp_path / "models"),
            lock_file=str(tmp_path / "registry.lock"),
        ),
    )


def open_context(config) -> ConsoleContext:
    context = ConsoleContext.open(config)
    # A cheaper argon2 cost than production's: the tests log in dozens of times.
    context.users.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return context


@dataclass
class Tenant:
    id: str
    token: str
    headers: dict[str, str]
    objects: dict[str, str] = field(default_factory=dict)


def campaign_doc(campaign_id: str, **overrides) -> dict:
    return {
        "id": campaign_id,
        "name": "Spring sale",
        "start_micros": START,
        "end_micros": START + 30 * DAY_MICROS,
        "total_budget_micros": 1_000_000_000,
        "daily_budget_micros": 50_000_000,
        "goal": "cpc",
        "goal_amount_micros": 500_000,
    } | overrides


def creative_doc(creative_id: str, **overrides) -> dict:
    return {
        "id": creative_id,
        "kind": "banner",
        "landing_url": "https://shop.example/spring",
        "sizes": [[300, 250]],
        "markup": "<a href='https://shop.example'>Spring</a>",
    } | overrides


@pytest.fixture
def world(tmp_path):
    """(client, context, admin headers, {name: Tenant}) with objects of each tenant."""
    yield from build_world(tmp_path)


def build_world(tmp_path):
    """The `world` fixture's body, for fixtures of a wider scope."""
    context = open_context(console_config(tmp_path))
    client = TestClient(create_app(context))
    admin = context.users.create_user("admin", PASSWORD, "admin")
    _, admin_token = context.users.create_token(admin.id, "tests")
    admin_headers = {"authorization": f"Bearer {admin_token}"}
    tenants = {}
    for name in ("adv-a", "adv-b"):
        domain = f"{name}.example"
        assert (
            client.post(
                "/api/v1/advertisers",
                json={"id": name, "name": name.upper(), "domain": domain},
                headers=admin_headers,
            ).status_code
            == 201
        )
        user = context.users.create_user(f"user-{name}", PASSWORD, "advertiser", name)
        _, token = context.users.create_token(user.id)
        headers = {"authorization": f"Bearer {token}"}
        tenant = Tenant(name, token, headers)
        cr = client.post("/api/v1/creatives", json=creative_doc(f"{name}-cr"), headers=headers)
        assert cr.status_code == 201, cr.text
        cp = client.post("/api/v1/campaigns", json=campaign_doc(f"{name}-cmp"), headers=headers)
        assert cp.status_code == 201, cp.text
        li = client.post(
            "/api/v1/line-items",
            json={"id": f"{name}-li", "campaign_id": f"{name}-cmp", "creative_ids": [f"{name}-cr"]},
            headers=headers,
        )
        assert li.status_code == 201, li.text
        token_id = client.get("/api/v1/auth/tokens", headers=headers).json()[0]["id"]
        tenant.objects = {
            "advertiser_id": name,
            "campaign_id": f"{name}-cmp",
            "line_item_id": f"{name}-li",
            "creative_id": f"{name}-cr",
            "token_id": token_id,
            "user_id": user.id,
        }
        tenants[name] = tenant
    for name in ("pub-p", "pub-q"):
        created = client.post(
            "/api/v1/publishers", json={"id": name, "name": name.upper()}, headers=admin_headers
        )
        assert created.status_code == 201, created.text
        user = context.users.create_user(f"user-{name}", PASSWORD, "publisher", name)
        _, token = context.users.create_token(user.id)
        headers = {"authorization": f"Bearer {token}"}
        tenant = Tenant(name, token, headers)
        site = client.post(
            "/api/v1/sites",
            json={"id": f"{name}-site", "kind": "site", "domain": f"{name}.example"},
            headers=headers,
        )
        assert site.status_code == 201, site.text
        placement = client.post(
            "/api/v1/placements",
            json={"id": f"{name}-pl", "name": "Top", "sizes": [[300, 250]]},
            headers=headers,
        )
        assert placement.status_code == 201, placement.text
        token_id = client.get("/api/v1/auth/tokens", headers=headers).json()[0]["id"]
        tenant.objects = {
            "publisher_id": name,
            "site_id": f"{name}-site",
            "placement_id": f"{name}-pl",
            "token_id": token_id,
            "user_id": user.id,
        }
        tenants[name] = tenant
    partner = client.post(
        "/api/v1/demand-partners",
        json={"id": "dsp-1", "endpoint": "https://dsp.example/bid"},
        headers=admin_headers,
    )
    assert partner.status_code == 201, partner.text
    admin_token_id = client.get("/api/v1/auth/tokens", headers=admin_headers).json()[0]["id"]
    tenants["admin"] = Tenant(
        "admin",
        admin_token,
        admin_headers,
        {"partner_id": "dsp-1", "user_id": admin.id, "token_id": admin_token_id},
    )
    yield client, context, admin_headers, tenants
    client.close()
    context.close()
