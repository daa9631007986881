"""The tenant isolation matrix: every route of the API that names an object in its path,
called by each tenant's user with another tenant's object id, answers 404, exactly as for
an id that does not exist. The routes come from the application's route table, so a new
route is covered as soon as it exists (a path parameter this test cannot fill fails it)."""

from __future__ import annotations

import re

import pytest

from openbid.console.app import API_PREFIX

OTHER = {"adv-a": "adv-b", "adv-b": "adv-a", "pub-p": "pub-q", "pub-q": "pub-p"}
PARAM = re.compile(r"{(\w+)}")
EXEMPT = {"purpose", "version"}
"""Path parameters that name no tenant's object (the model routes are admin-only)."""


def object_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every API route with a path parameter, from the route table as the
    application publishes it (`/openapi.json` is built from it)."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(API_PREFIX) and "{" in path:
            routes += [(method.upper(), path) for method in sorted(operations)]
    return routes


def fill(path: str, objects: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in objects:
            return objects[name]
        if name in EXEMPT:
            return {"purpose": "ctr", "version": "1"}[name]
        # An object of another kind than the caller's tenant has (a publisher's user and a
        # campaign): any other tenant's id of that kind will do.
        raise KeyError(name)

    return PARAM.sub(value, path)


def test_the_matrix_covers_every_object_route(world):
    client, _, _, tenants = world
    names = {name for _, path in object_routes(client.app) for name in PARAM.findall(path)}
    known = set().union(*(t.objects for t in tenants.values())) | EXEMPT
    assert names <= known, f"path parameters the matrix cannot fill: {names - known}"
    assert len(object_routes(client.app)) >= 30


@pytest.mark.parametrize("caller", sorted(OTHER))
def test_another_tenants_object_is_not_found(world, caller):
    client, _, _, tenants = world
    me = tenants[caller]
    everyone_else = [t for name, t in tenants.items() if name != caller]
    checked = 0
    for method, path in object_routes(client.app):
        names = PARAM.findall(path)
        if set(names) <= EXEMPT:
            continue
        # The other tenant of my kind first, then anyone who has objects of that kind.
        owners = [tenants[OTHER[caller]]] + everyone_else
        owner = next(t for t in owners if all(n in t.objects or n in EXEMPT for n in names))
        url = fill(path, owner.objects)
        response = client.request(method, url, headers=me.headers, json={})
        assert response.status_code == 404, (method, url, response.status_code, response.text)
        body = response.json()["error"]
        assert body["field"] in names and owner.objects[body["field"]] in body["message"]
        checked += 1
    assert checked >= 30


def test_the_owner_reaches_its_own_objects(world):
    client, _, _, tenants = world
    for tenant in tenants.values():
        for method, path in object_routes(client.app):
            names = PARAM.findall(path)
            if method != "GET" or not set(names) <= set(tenant.objects):
                continue
            if names == ["user_id"]:
                continue  # users are an admin's to manage
            response = client.get(fill(path, tenant.objects), headers=tenant.headers)
            assert response.status_code == 200, (path, response.text)


def test_lists_hold_only_the_callers_objects(world):
    client, _, admin, tenants = world
    a = tenants["adv-a"].headers
    assert [c["id"] for c in client.get("/api/v1/campaigns", headers=a).json()] == ["adv-a-cmp"]
    assert client.get("/api/v1/campaigns?advertiser_id=adv-b", headers=a).json() == []
    assert [c["id"] for c in client.get("/api/v1/creatives", headers=a).json()] == ["adv-a-cr"]
    assert [li["id"] for li in client.get("/api/v1/line-items", headers=a).json()] == ["adv-a-li"]
    assert [x["id"] for x in client.get("/api/v1/advertisers", headers=a).json()] == ["adv-a"]
    p = tenants["pub-p"].headers
    assert [x["id"] for x in client.get("/api/v1/placements", headers=p).json()] == ["pub-p-pl"]
    assert [x["id"] for x in client.get("/api/v1/sites", headers=p).json()] == ["pub-p-site"]
    assert [x["id"] for x in client.get("/api/v1/publishers", headers=p).json()] == ["pub-p"]
    assert len(client.get("/api/v1/campaigns", headers=admin).json()) == 2


def test_a_line_item_cannot_borrow_another_tenants_creative(world):
    client, _, _, tenants = world
    response = client.post(
        "/api/v1/line-items",
        json={"id": "steal", "campaign_id": "adv-a-cmp", "creative_ids": ["adv-b-cr"]},
        headers=tenants["adv-a"].headers,
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "field": "creative_ids",
        "message": "no creative 'adv-b-cr'",
    }


def test_creating_under_another_advertiser_is_not_found(world):
    client, _, _, tenants = world
    response = client.post(
        "/api/v1/campaigns",
        json={
            "id": "x1",
            "advertiser_id": "adv-b",
            "name": "x",
            "start_micros": 1,
            "end_micros": 2,
            "total_budget_micros": 5,
            "goal_amount_micros": 1,
        },
        headers=tenants["adv-a"].headers,
    )
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "advertiser_id"
