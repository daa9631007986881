"""The console's web pages through Starlette's TestClient, with each tenant's own session
(the login form, its CSRF cookie): the page isolation matrix (every page naming an object,
with another tenant's id, is the 404 page, as for an id that does not exist), logins and
CSRF, the campaign editor's errors, bulk upload's report of refused rows and its tenant
scope, and the report explorer's CSV link."""

from __future__ import annotations

import re

import pytest

from openbid.console.web import PAGE_ROUTERS
from tests.console.conftest import PASSWORD, build_world, campaign_doc

HTML = {"accept": "text/html"}
PARAM = re.compile(r"{(\w+)}")
OTHER = {"adv-a": "adv-b", "adv-b": "adv-a"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One console for the module (each test makes objects of its own ids, and logs in
    afresh): the users' password hashing and the objects are made once."""
    yield from build_world(tmp_path_factory.mktemp("pages"))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, username: str) -> str:
    """Logs `client` in through the form; the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/login", headers=HTML)
    response = client.post(
        "/auth/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        headers=HTML,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/", headers=HTML).text)


def page_routes() -> list[str]:
    """The GET pages that name a tenant's object in their path (every page router's routes,
    so a new page is covered at once; the admins' health pages name none)."""
    return sorted(
        route.path
        for router in PAGE_ROUTERS
        for route in router.routes
        if "GET" in route.methods and "{" in route.path and not route.path.startswith("/health/")
    )


def test_pages_redirect_to_the_login_and_back(world):
    client, *_ = world
    response = client.get("/campaigns?x=1", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/campaigns%3Fx%3D1"
    assert client.get("/api/v1/campaigns").status_code == 401  # the API stays JSON
    assert client.get("/api/v1/campaigns").json()["error"]["field"] == "authorization"


def test_a_login_without_its_csrf_token_is_refused(world):
    client, *_ = world
    client.get("/login", headers=HTML)
    response = client.post(
        "/auth/login", data={"username": "admin", "password": PASSWORD}, headers=HTML
    )
    assert response.status_code == 403 and "csrf_token" in response.text


def test_a_wrong_password_comes_back_to_the_login_page(world):
    client, *_ = world
    form = client.get("/login", headers=HTML)
    response = client.post(
        "/auth/login",
        data={"username": "admin", "password": "nope", "csrf_token": csrf_of(form.text)},
        headers=HTML,
    )
    assert response.status_code == 401 and "Wrong user name or password" in response.text


@pytest.mark.parametrize("caller", sorted(OTHER))
def test_another_tenants_object_is_the_not_found_page(world, caller):
    client, _, _, tenants = world
    routes = page_routes()
    assert {"/campaigns/{campaign_id}", "/creatives/{creative_id}"} <= set(routes)
    log_in(client, f"user-{caller}")
    other = tenants[OTHER[caller]].objects
    for path in routes:
        url = PARAM.sub(lambda m: other[m.group(1)], path)
        response = client.get(url, headers=HTML)
        assert response.status_code == 404, (url, response.status_code)
        assert "Not found" in response.text and other[PARAM.findall(path)[0]] in response.text
        missing = client.get(PARAM.sub("no-such-id", path), headers=HTML)
        assert missing.status_code == 404  # the same answer as for what does not exist
    mine = tenants[caller].objects
    for path in routes:
        url = PARAM.sub(lambda m: mine[m.group(1)], path)
        assert client.get(url, headers=HTML).status_code == 200, url


def test_lists_hold_only_the_callers_objects(world):
    client, *_ = world
    log_in(client, "user-adv-a")
    campaigns = client.get("/campaigns", headers=HTML).text
    assert "adv-a-cmp" in campaigns and "adv-b-cmp" not in campaigns
    creatives = client.get("/creatives", headers=HTML).text
    assert "adv-a-cr" in creatives and "adv-b-cr" not in creatives
    assert client.get("/health/exchange", headers=HTML).status_code == 403


def test_a_publisher_has_no_campaign_pages(world):
    client, *_ = world
    log_in(client, "user-pub-p")
    assert client.get("/campaigns", headers=HTML).status_code == 403
    assert client.get("/", headers=HTML).status_code == 200


def test_a_form_post_needs_the_sessions_csrf_token(world):
    client, *_ = world
    token = log_in(client, "user-adv-a")
    fields = {"id": "c2", "name": "Two", "start": "2027-01-01", "end": "2027-01-31",
              "goal_amount": "2"}  # fmt: skip
    refused = client.post("/campaigns/new", data=fields | {"total_budget": "10"}, headers=HTML)
    assert refused.status_code == 403
    accepted = client.post(
        "/campaigns/new",
        data=fields | {"total_budget": "10", "csrf_token": token},
        headers=HTML,
        follow_redirects=False,
    )
    assert accepted.status_code == 303 and accepted.headers["location"] == "/campaigns/c2"


def test_the_editor_names_the_field_and_keeps_what_was_typed(world):
    client, context, _, _ = world
    token = log_in(client, "user-adv-a")
    response = client.post(
        "/campaigns/new",
        data={
            "csrf_token": token,
            "id": "c3",
            "name": "Three",
            "start": "2027-01-31",
            "end": "2027-01-01",
            "total_budget": "abc",
            "countries": "USA, XX1",
        },
        headers=HTML,
    )
    assert response.status_code == 422
    assert "total_budget</a>: an amount in USD" in response.text
    assert 'value="USA, XX1"' in response.text and 'value="Three"' in response.text
    assert context.catalog.campaign("c3") is None


def test_the_editor_saves_budget_and_targeting(world):
    client, context, _, _ = world
    token = log_in(client, "user-adv-a")
    response = client.post(
        "/campaigns/new",
        data={
            "csrf_token": token,
            "id": "c4",
            "name": "Four",
            "start": "2027-01-01",
            "end": "2027-01-31",
            "total_budget": "$1,500.50",
            "daily_budget": "60",
            "goal": "cpc",
            "goal_amount": "0.75",
            "countries": "usa, CAN",
            "device_types": ["phone", "tablet"],
            "formats": "banner",
            "creative_ids": "adv-a-cr",
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    campaign = context.catalog.campaign("c4")
    assert campaign.advertiser_id == "adv-a" and campaign.total_budget_micros == 1_500_500_000
    assert campaign.daily_budget_micros == 60_000_000 and campaign.goal_amount_micros == 750_000
    assert campaign.end_micros == 1_801_439_999_999_999  # the end day is included
    (line_item,) = context.catalog.line_items("c4")
    assert line_item.creative_ids == ("adv-a-cr",) or list(line_item.creative_ids) == ["adv-a-cr"]
    targeting = client.get(
        f"/api/v1/line-items/{line_item.id}/targeting", headers=world[3]["adv-a"].headers
    ).json()
    assert targeting["countries"] == ["USA", "CAN"]
    assert targeting["device_types"] == ["phone", "tablet"] and targeting["formats"] == ["banner"]


def test_the_editor_cannot_use_another_tenants_creative(world):
    client, context, _, _ = world
    token = log_in(client, "user-adv-a")
    response = client.post(
        "/campaigns/adv-a-cmp/edit",
        data={
            "csrf_token": token,
            "name": "x",
            "start": "2027-01-01",
            "end": "2027-01-31",
            "total_budget": "10",
            "creative_ids": "adv-b-cr",
        },  # fmt: skip
        headers=HTML,
    )
    assert response.status_code == 422 and "no creative &#39;adv-b-cr&#39;" in response.text


BULK_CSV = """record,id,advertiser,campaign,name,start,end,total_budget,goal_amount,kind,landing_url,sizes,markup,creatives
campaign,bulk-1,,,Bulk one,2027-01-01,2027-01-31,500,1,,,,,
campaign,bulk-2,,,Bulk two,2027-01-31,2027-01-01,500,1,,,,,
campaign,adv-b-cmp,,,Hijack,2027-01-01,2027-01-31,500,1,,,,,
campaign,bulk-3,adv-b,,Elsewhere,2027-01-01,2027-01-31,500,1,,,,,
creative,bulk-cr,,,,,,,,banner,https://a.example/x,300x250,https://a.example/x.png,
line_item,bulk-li,,bulk-1,Main,,,,,,,,,bulk-cr
line_item,bulk-li2,,bulk-2,Other,,,,,,,,,
"""


def test_bulk_upload_reports_every_refused_row_and_keeps_the_good_ones(world):
    client, context, _, _ = world
    token = log_in(client, "user-adv-a")
    response = client.post(
        "/bulk",
        data={"csrf_token": token},
        files={"file": ("campaigns.csv", BULK_CSV.encode(), "text/csv")},
        headers=HTML,
    )
    assert response.status_code == 200, response.text
    rows = re.findall(
        r'<tr><td class="num">(\d+)</td><td>(\w+)</td><td>([\w-]*)</td><td><code>([\w_]+)</code></td>',
        response.text,
    )
    refused = {(int(row), record_id, field) for row, _, record_id, field in rows}
    assert (3, "bulk-2", "end") in refused or (3, "bulk-2", "start") in refused
    assert (4, "adv-b-cmp", "id") in refused  # another tenant's id is not overwritten
    assert (5, "bulk-3", "advertiser_id") in refused  # nor another advertiser named
    assert any(row == 8 and record_id == "bulk-li2" for row, record_id, _ in refused)
    assert context.catalog.campaign("bulk-1").advertiser_id == "adv-a"
    assert context.catalog.campaign("adv-b-cmp").name == "Spring sale"
    assert context.catalog.campaign("bulk-3") is None
    assert [li.id for li in context.catalog.line_items("bulk-1")] == ["bulk-li"]


def test_bulk_upload_of_a_file_that_is_not_csv_or_yaml_says_so(world):
    client, *_ = world
    token = log_in(client, "user-adv-a")
    response = client.post(
        "/bulk",
        data={"csrf_token": token},
        files={"file": ("x.yaml", b"- [unclosed", "application/yaml")},
        headers=HTML,
    )
    assert response.status_code == 422 and "not valid YAML" in response.text


def test_the_report_explorer_and_its_csv_link(world):
    client, context, _, tenants = world
    log_in(client, "user-adv-a")
    response = client.get("/reports?group_by=day&group_by=dsp", headers=HTML)
    assert response.status_code == 200
    link = re.search(r'href="(/api/v1/reports\?[^"]+)"', response.text).group(1)
    csv = client.get(link.replace("&amp;", "&"))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("day,")
    by_campaign = client.get("/reports?group_by=campaign", headers=HTML)
    assert by_campaign.status_code == 200 and 'value="campaign" checked' in by_campaign.text
    log_in(client, "user-pub-p")
    hidden = client.get("/reports?group_by=campaign", headers=HTML)
    assert 'value="campaign"' not in hidden.text  # publishers do not see campaigns


def test_pages_carry_a_content_security_policy(world):
    client, *_ = world
    log_in(client, "admin")
    response = client.get("/", headers=HTML)
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in response.text  # no inline script: charts read JSON elements


def test_a_campaign_delete_elsewhere_leaves_its_page_not_found(world):
    client, context, _, tenants = world
    log_in(client, "user-adv-a")
    assert client.get("/campaigns/adv-a-cmp", headers=HTML).status_code == 200
    created = client.post(
        "/api/v1/campaigns", json=campaign_doc("gone"), headers=tenants["adv-a"].headers
    )
    assert created.status_code == 201
    client.delete("/api/v1/campaigns/gone", headers=tenants["adv-a"].headers)
    assert client.get("/campaigns/gone", headers=HTML).status_code == 404
