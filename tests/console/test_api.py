"""The API resource by resource: create, read, update, delete, and bad input answered with
the error body naming the field."""

from __future__ import annotations

import struct

from tests.console.conftest import campaign_doc, creative_doc


def error_of(response) -> dict:
    return response.json()["error"]


def test_campaign_crud_and_budget(world):
    client, _, _, tenants = world
    a = tenants["adv-a"].headers
    created = client.post("/api/v1/campaigns", json=campaign_doc("c2", name="Summer"), headers=a)
    assert created.status_code == 201 and created.json()["advertiser_id"] == "adv-a"
    assert client.get("/api/v1/campaigns/c2", headers=a).json()["name"] == "Summer"
    patched = client.patch("/api/v1/campaigns/c2", json={"status": "paused"}, headers=a)
    assert patched.json()["status"] == "paused" and patched.json()["name"] == "Summer"
    budget = client.put(
        "/api/v1/campaigns/c2/budget",
        json={"total_budget_micros": 2_000_000_000, "daily_budget_micros": 100_000_000},
        headers=a,
    )
    assert budget.status_code == 200, budget.text
    assert budget.json()["total_budget_micros"] == 2_000_000_000
    assert budget.json()["spent_micros"] == 0 and budget.json()["budget_use"] == 0.0
    assert client.delete("/api/v1/campaigns/c2", headers=a).json() == {"deleted": "c2"}
    assert client.get("/api/v1/campaigns/c2", headers=a).status_code == 404


def test_campaign_validation_names_the_field(world):
    client, _, _, tenants = world
    a = tenants["adv-a"].headers
    bad = campaign_doc("c3", daily_budget_micros=2_000_000_000)
    response = client.post("/api/v1/campaigns", json=bad, headers=a)
    assert response.status_code == 422
    assert error_of(response)["field"] == "daily_budget_micros"
    response = client.post("/api/v1/campaigns", json=campaign_doc("c3", goal="cpx"), headers=a)
    assert response.status_code == 422 and error_of(response)["field"] == "goal"
    missing = {k: v for k, v in campaign_doc("c3").items() if k != "name"}
    response = client.post("/api/v1/campaigns", json=missing, headers=a)
    assert error_of(response) == {
        "field": "name",
        "message": "required",
        "details": [{"field": "name", "message": "required"}],
    }
    response = client.post("/api/v1/campaigns", json=campaign_doc("c3", budget=5), headers=a)
    assert response.status_code == 422 and error_of(response)["field"] == "budget"
    taken = client.post("/api/v1/campaigns", json=campaign_doc("adv-a-cmp"), headers=a)
    assert taken.status_code == 409 and error_of(taken)["field"] == "id"
    patch = client.patch("/api/v1/campaigns/adv-a-cmp", json={"end_micros": 1}, headers=a)
    assert patch.status_code == 422 and error_of(patch)["field"] == "end_micros"


def test_line_item_targeting(world):
    client, _, _, tenants = world
    a = tenants["adv-a"].headers
    targeting = {"countries": ["USA", "DEU"], "device_types": ["phone"], "hour_mask": "ffffff"}
    put = client.put("/api/v1/line-items/adv-a-li/targeting", json=targeting, headers=a)
    assert put.status_code == 200, put.text
    got = client.get("/api/v1/line-items/adv-a-li/targeting", headers=a).json()
    assert got["countries"] == ["USA", "DEU"] and got["hour_mask"] == "ffffff"
    bad = client.put("/api/v1/line-items/adv-a-li/targeting", json={"countries": ["US"]}, headers=a)
    assert bad.status_code == 422 and error_of(bad)["field"] == "targeting.countries"
    nested = client.patch(
        "/api/v1/line-items/adv-a-li", json={"targeting": {"countries": [5]}}, headers=a
    )
    assert nested.status_code == 422 and error_of(nested)["field"] == "targeting.countries[0]"
    renamed = client.patch("/api/v1/line-items/adv-a-li", json={"name": "Top"}, headers=a)
    assert renamed.json()["name"] == "Top" and renamed.json()["targeting"]["countries"] == [
        "USA",
        "DEU",
    ]


def test_creatives_approval_is_an_admins(world):
    client, _, admin, tenants = world
    a = tenants["adv-a"].headers
    response = client.post(
        "/api/v1/creatives", json=creative_doc("cr2", approval="approved"), headers=a
    )
    assert response.status_code == 403 and error_of(response)["field"] == "approval"
    created = client.post("/api/v1/creatives", json=creative_doc("cr2"), headers=a).json()
    assert created["approval"] == "pending" and created["adomain"] == ["adv-a.example"]
    approved = client.patch("/api/v1/creatives/cr2", json={"approval": "approved"}, headers=admin)
    assert approved.json()["approval"] == "approved"
    edited = client.patch("/api/v1/creatives/cr2", json={"name": "new"}, headers=a)
    assert edited.json()["approval"] == "pending"
    bad = client.post("/api/v1/creatives", json=creative_doc("cr3", sizes=[]), headers=a)
    assert bad.status_code == 422 and error_of(bad)["field"] == "sizes"


def png(width: int, height: int) -> bytes:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    return header + struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0) + b"\0" * 64


VAST = b"""<VAST version="4.0"><Ad id="1"><InLine><AdSystem>x</AdSystem><AdTitle>t</AdTitle>
<Creatives><Creative><Linear><Duration>00:00:15</Duration><MediaFiles>
<MediaFile type="video/mp4" width="640" height="360">https://cdn.example/a.mp4</MediaFile>
</MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>"""


def upload(client, headers, kind, data, name, **fields):
    form = {
        "id": fields.pop("id", f"up-{kind}"),
        "kind": kind,
        "landing_url": "https://shop.example/",
    }
    return client.post(
        "/api/v1/creatives/upload",
        data=form | fields,
        files={"file": (name, data, "application/octet-stream")},
        headers=headers,
    )


def test_upload_image_html_and_vast_and_preview(world):
    client, _, _, tenants = world
    a = tenants["adv-a"].headers
    image = upload(client, a, "image", png(300, 250), "ad.png", sizes="300x250")
    assert image.status_code == 201, image.text
    markup = image.json()["markup"]
    assert image.json()["sizes"] == [[300, 250]] and "/assets/" in markup
    served = client.get(markup.split("8090", 1)[1])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == png(300, 250)
    preview = client.get("/api/v1/creatives/up-image/preview", headers=a)
    assert preview.status_code == 200 and markup in preview.text
    assert "sandbox" in preview.headers["content-security-policy"]
    html = upload(
        client,
        a,
        "html",
        b"<div><a href='https://x.example'>Hi</a></div>",
        "a.html",
        sizes="728x90",
    )
    assert html.status_code == 201 and html.json()["sizes"] == [[728, 90]]
    vast = upload(client, a, "vast", VAST, "a.xml")
    assert vast.status_code == 201 and vast.json()["duration_s"] == 15
    preview = client.get("/api/v1/creatives/up-vast/preview", headers=a)
    assert preview.headers["content-type"].startswith("application/xml")
    assert '<Impression id="openbid">' in preview.text


def test_upload_refusals_name_the_field(world):
    client, _, _, tenants = world
    a = tenants["adv-a"].headers
    wrong_size = upload(client, a, "image", png(320, 50), "ad.png", sizes="300x250")
    assert wrong_size.status_code == 422 and error_of(wrong_size)["field"] == "sizes"
    not_image = upload(client, a, "image", b"GIF8 nope", "ad.gif")
    assert error_of(not_image) == {"field": "file", "message": "not a PNG, JPEG, GIF or WebP image"}
    too_big = upload(client, a, "image", png(300, 250) + b"\0" * 400_000, "big.png")
    assert too_big.status_code == 422 and "bytes" in error_of(too_big)["message"]
    insecure = upload(
        client, a, "html", b"<img src='http://x.example/a.png'>", "a.html", sizes="300x250"
    )
    assert insecure.status_code == 422 and "http" in error_of(insecure)["message"]
    no_vast = upload(client, a, "vast", b"<VAST version='4.0'></VAST>", "a.xml")
    assert error_of(no_vast) == {"field": "file", "message": "no <Ad> in the VAST"}
    bad_media = upload(client, a, "vast", VAST.replace(b"video/mp4", b"video/x-flv"), "a.xml")
    assert "video/x-flv" in error_of(bad_media)["message"]
    kind = upload(client, a, "gif", b"", "a")
    assert kind.status_code == 422 and error_of(kind)["field"] == "kind"


def test_publishers_keys_sites_placements_floors(world):
    client, context, admin, tenants = world
    created = client.post("/api/v1/publishers", json={"id": "pub-z", "name": "Z"}, headers=admin)
    key = created.json()["api_key"]
    assert context.catalog.publisher_by_api_key(key).id == "pub-z"
    assert "api_key" not in client.get("/api/v1/publishers/pub-z", headers=admin).json()
    rotated = client.post("/api/v1/publishers/pub-z/api-keys", headers=admin).json()["api_key"]
    assert context.catalog.publisher_by_api_key(key) is None
    assert context.catalog.publisher_by_api_key(rotated).id == "pub-z"
    p = tenants["pub-p"].headers
    floor = client.put(
        "/api/v1/placements/pub-p-pl/floor", json={"floor_micros": 250_000}, headers=p
    )
    assert floor.json()["floor_micros"] == 250_000
    assert context.catalog.placement("pub-p-pl").floor_micros == 250_000
    pub_floor = client.put("/api/v1/publishers/pub-p/floor", json={"floor_micros": -1}, headers=p)
    assert pub_floor.status_code == 422 and error_of(pub_floor)["field"] == "floor_micros"
    blocks = client.patch(
        "/api/v1/publishers/pub-p", json={"blocked_adomains": ["bad.example"]}, headers=p
    )
    assert context.catalog.publisher("pub-p").blocked_adomains == ("bad.example",)
    assert blocks.status_code == 200
    not_admin = client.post("/api/v1/publishers", json={"id": "pz", "name": "Z"}, headers=p)
    assert not_admin.status_code == 403 and error_of(not_admin)["field"] == "role"
    site = client.patch("/api/v1/sites/pub-p-site", json={"domain": "Upper.Example"}, headers=p)
    assert site.status_code == 422 and error_of(site)["field"] == "domain"
    app = client.post(
        "/api/v1/sites", json={"id": "app-1", "kind": "app", "domain": "com.pub.app"}, headers=p
    )
    assert app.status_code == 201 and app.json()["publisher_id"] == "pub-p"
    assert client.delete("/api/v1/placements/pub-p-pl", headers=p).status_code == 200
    assert context.catalog.placement("pub-p-pl") is None


def test_demand_partners_are_admins(world):
    client, context, admin, tenants = world
    patched = client.patch("/api/v1/demand-partners/dsp-1", json={"qps_cap": 500}, headers=admin)
    assert patched.json()["qps_cap"] == 500
    assert [p.qps_cap for p in context.catalog.demand_partners()] == [500]
    bad = client.post(
        "/api/v1/demand-partners", json={"id": "d2", "endpoint": "ftp://x"}, headers=admin
    )
    assert bad.status_code == 422 and error_of(bad)["field"] == "endpoint"
    listing = client.get("/api/v1/demand-partners", headers=tenants["adv-a"].headers)
    assert listing.status_code == 403


def test_unknown_route_and_method_use_the_error_body(world):
    client, _, admin, _ = world
    assert error_of(client.get("/api/v1/nothing", headers=admin))["field"] == "path"
    assert client.put("/api/v1/campaigns", headers=admin).status_code == 405


def test_model_versions_read_the_registry(world):
    client, context, admin, tenants = world
    listed = client.get("/api/v1/models/ctr/versions", headers=admin)
    assert listed.status_code == 200 and listed.json() == [], listed.text
    missing = client.get("/api/v1/models/ctr/versions/3", headers=admin)
    assert missing.status_code == 404 and error_of(missing)["field"] == "version"
    assert (
        client.get("/api/v1/models/ctr/versions", headers=tenants["adv-a"].headers).status_code
        == 403
    )
    assert client.get("/api/v1/models/nope/versions", headers=admin).status_code == 422
