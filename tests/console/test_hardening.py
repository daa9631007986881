"""Attacks on the console's pages and their fixes (a second reader's findings): request
bodies bounded before any route reads them, an advertiser's bulk upload cannot approve its
own creatives, a login ends the session it replaces, CSV exports cannot carry formulas."""

from __future__ import annotations

import asyncio

import pytest

from openbid.console.bodylimit import FORM_SLACK_BYTES, BodyLimit
from openbid.console.reports.query import to_csv
from tests.console.conftest import PASSWORD, build_world
from tests.console.test_pages import HTML, log_in


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from build_world(tmp_path_factory.mktemp("hardening"))


PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'


def _call(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """(status, chunks the app pulled) of one raw ASGI POST to the upload route: a file part
    of `chunks` (as a browser streams it)."""
    chunks = [PART, *chunks]
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": True}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/creatives/upload", "raw_path": b"/api/v1/creatives/upload",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("testserver", 80), "headers": headers,
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled


def test_an_oversized_declared_upload_is_refused_before_its_body_is_read(world):
    client, context, *_ = world
    limit = context.config.console.max_upload_bytes + FORM_SLACK_BYTES
    headers = [
        (b"content-type", b"multipart/form-data; boundary=B"),
        (b"content-length", str(limit + 1).encode()),
    ]
    status, pulled = _call(client.app, headers, [b"x" * 65536] * 100)
    assert (status, pulled) == (413, 0)  # not logged in, and not one byte spooled


def test_an_oversized_streamed_upload_is_refused_once_past_the_bound(world):
    client, context, *_ = world
    limit = context.config.console.max_upload_bytes + FORM_SLACK_BYTES
    chunk = 65536
    headers = [(b"content-type", b"multipart/form-data; boundary=B")]
    status, pulled = _call(client.app, headers, [b"x" * chunk] * 1000)  # 64 MB, no length
    assert status == 413
    assert pulled <= limit // chunk + 2  # stopped at the bound, not at the end


def test_an_upload_within_the_bound_still_reaches_its_route(world):
    client, _, _, tenants = world
    response = client.post(
        "/api/v1/creatives/upload",
        data={
            "id": "in-bound",
            "kind": "html",
            "landing_url": "https://a.example/",
            "sizes": "300x250",
        },
        files={"file": ("ad.html", b"<a href='https://a.example/'>ad</a>", "text/html")},
        headers=tenants["adv-a"].headers,
    )
    assert response.status_code == 201, response.text


def test_the_body_bound_is_a_page_for_a_browser(world):
    client, *_ = world
    body = b"x" * (client.app.state.console.config.console.max_upload_bytes + FORM_SLACK_BYTES + 1)
    response = client.post(
        "/auth/login",
        content=body,
        headers=HTML | {"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413 and "<html" in response.text


def test_body_limit_passes_other_protocols_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(BodyLimit(app, 10)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def _bulk(client, token: str, text: str):
    return client.post(
        "/bulk",
        data={"csrf_token": token},
        files={"file": ("creatives.yaml", text.encode(), "application/yaml")},
        headers=HTML,
    )


def _creative_yaml(creative_id: str, markup: str, approval: str = "") -> str:
    line = f"    approval: {approval}\n" if approval else ""
    return (
        f"creatives:\n  - id: {creative_id}\n    kind: banner\n"
        f"    landing_url: https://adv-a.example/x\n    sizes: [[300, 250]]\n"
        f'    markup: "{markup}"\n' + line
    )


def test_an_advertisers_bulk_upload_cannot_approve_its_own_creative(world):
    client, context, *_ = world
    token = log_in(client, "user-adv-a")
    response = _bulk(client, token, _creative_yaml("self-ok", "<b>ad</b>", "approved"))
    assert response.status_code == 200, response.text
    assert context.catalog.creative("self-ok").approval == "pending"


def test_a_bulk_upload_keeps_a_review_only_for_an_unchanged_creative(world):
    client, context, admin_headers, _ = world
    token = log_in(client, "user-adv-a")
    assert _bulk(client, token, _creative_yaml("reviewed", "<b>ad</b>")).status_code == 200
    approved = client.patch(
        "/api/v1/creatives/reviewed", json={"approval": "approved"}, headers=admin_headers
    )
    assert approved.status_code == 200, approved.text
    token = log_in(client, "user-adv-a")
    _bulk(client, token, _creative_yaml("reviewed", "<b>ad</b>", "approved"))
    assert context.catalog.creative("reviewed").approval == "approved"  # a re-import
    _bulk(client, token, _creative_yaml("reviewed", "<b>other ad</b>", "approved"))
    assert context.catalog.creative("reviewed").approval == "pending"  # edited: reviewed again


def test_an_admins_bulk_upload_may_approve(world):
    client, context, *_ = world
    token = log_in(client, "admin")
    text = _creative_yaml("admin-ok", "<b>ad</b>", "approved").replace(
        "    kind:", "    advertiser: adv-a\n    kind:"
    )
    assert _bulk(client, token, text).status_code == 200
    assert context.catalog.creative("admin-ok").approval == "approved"


def test_a_csv_export_cannot_carry_a_spreadsheet_formula():
    rows = [{"advertiser": '=HYPERLINK("https://evil.example","x")', "impressions": 3},
            {"advertiser": "shop.example", "impressions": None}]  # fmt: skip
    lines = to_csv(rows, ["advertiser"]).splitlines()
    assert lines[1].startswith("\"'=HYPERLINK(") and ",3," in lines[1]
    assert lines[2].startswith("shop.example,")


def test_a_login_ends_the_session_it_replaces(world):
    client, *_ = world
    log_in(client, "user-adv-a")
    first = client.cookies.get("openbid_session")
    login_token = "t" * 43  # the login form's double-submit cookie, as /login would set it
    client.cookies.set("openbid_csrf", login_token)
    response = client.post(
        "/auth/login",
        data={"username": "user-adv-b", "password": PASSWORD, "csrf_token": login_token},
        headers=HTML,
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert client.cookies.get("openbid_session") not in ("", first)
    client.cookies.clear()
    client.cookies.set("openbid_session", first)
    assert client.get("/campaigns", headers=HTML, follow_redirects=False).status_code == 303
