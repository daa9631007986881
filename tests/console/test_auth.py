"""Logins, lockouts, tokens, sessions and CSRF."""

from __future__ import annotations

from fastapi.testclient import TestClient

from openbid.console.app import create_app
from tests.console.conftest import PASSWORD, console_config, open_context


def login(client, username, password, token_name="t"):
    return client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password, "token_name": token_name},
    )


def test_login_gives_a_token_shown_once_and_stored_hashed(world):
    client, context, _, _ = world
    response = login(client, "user-adv-a", PASSWORD)
    assert response.status_code == 201
    token = response.json()["token"]
    me = client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {token}"}).json()
    assert me == {
        "user_id": me["user_id"],
        "username": "user-adv-a",
        "role": "advertiser",
        "tenant_id": "adv-a",
    }
    listed = client.get("/api/v1/auth/tokens", headers={"authorization": f"Bearer {token}"}).json()
    assert all("token" not in t for t in listed)
    with context.catalog.engine.connect() as connection:
        stored = [
            row[0] for row in connection.exec_driver_sql("SELECT token_sha256 FROM console_tokens")
        ]
    assert token not in stored and len(stored[0]) == 64


def test_wrong_password_is_refused_without_saying_which(world):
    client, _, _, _ = world
    wrong = login(client, "user-adv-a", "not the password")
    unknown = login(client, "nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["field"] == "password"


def test_account_locked_after_n_wrong_passwords(world):
    client, context, _, _ = world
    for _ in range(context.users.max_failures - 1):
        assert login(client, "user-adv-b", "wrong password!").status_code == 401
    locked = login(client, "user-adv-b", "wrong password!")
    assert locked.status_code == 429 and locked.json()["error"]["field"] == "username"
    assert int(locked.headers["retry-after"]) > 0
    # Even the right password is refused while the lock holds.
    assert login(client, "user-adv-b", PASSWORD).status_code == 429
    context.users.now = lambda: 1e12  # long after the lockout
    assert login(client, "user-adv-b", PASSWORD).status_code == 201


def test_an_address_is_throttled_across_accounts(tmp_path):
    context = open_context(console_config(tmp_path, login_ip_max_failures=3))
    client = TestClient(create_app(context))
    context.users.create_user("solo", PASSWORD, "admin")
    try:
        for name in ("a1", "a2", "a3"):
            assert login(client, name, "whatever password").status_code == 401
        refused = login(client, "solo", PASSWORD)
        assert refused.status_code == 429 and refused.json()["error"]["field"] == "address"
    finally:
        client.close()
        context.close()


def test_a_revoked_token_stops_working(world):
    client, _, _, tenants = world
    tenant = tenants["adv-a"]
    second = client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=tenant.headers).json()
    headers = {"authorization": f"Bearer {second['token']}"}
    assert client.get("/api/v1/campaigns", headers=headers).status_code == 200
    revoked = client.delete(f"/api/v1/auth/tokens/{second['id']}", headers=tenant.headers)
    assert revoked.status_code == 200
    refused = client.get("/api/v1/campaigns", headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["field"] == "authorization"
    assert client.get("/api/v1/campaigns").status_code == 401


def session_client(world):
    client, context, _, _ = world
    csrf = client.get("/auth/csrf").json()["csrf_token"]
    response = client.post(
        "/auth/login",
        data={"username": "user-adv-a", "password": PASSWORD, "csrf_token": csrf, "next": "/x"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/x"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    return client


def test_session_login_and_csrf_on_form_posts(world):
    client = session_client(world)
    assert [c["id"] for c in client.get("/api/v1/campaigns").json()] == ["adv-a-cmp"]
    # A form post with the session but without its token is refused.
    no_token = client.post("/auth/logout", data={}, follow_redirects=False)
    assert no_token.status_code == 403 and no_token.json()["error"]["field"] == "csrf_token"
    json_write = client.patch("/api/v1/campaigns/adv-a-cmp", json={"name": "x"})
    assert json_write.status_code == 403
    token = client.get("/auth/csrf").json()["csrf_token"]
    with_header = client.patch(
        "/api/v1/campaigns/adv-a-cmp", json={"name": "x"}, headers={"x-csrf-token": token}
    )
    assert with_header.status_code == 200
    out = client.post("/auth/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/api/v1/campaigns").status_code == 401


def test_login_form_needs_its_double_submit_token(world):
    client, _, _, _ = world
    client.get("/auth/csrf")
    response = client.post(
        "/auth/login",
        data={"username": "user-adv-a", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403 and response.json()["error"]["field"] == "csrf_token"


def test_login_redirect_stays_on_site(world):
    client, _, _, _ = world
    csrf = client.get("/auth/csrf").json()["csrf_token"]
    response = client.post(
        "/auth/login",
        data={
            "username": "user-adv-a",
            "password": PASSWORD,
            "csrf_token": csrf,
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_users_are_managed_by_admins(world):
    client, context, admin, tenants = world
    created = client.post(
        "/api/v1/users",
        json={
            "username": "anna",
            "password": "long enough pw",
            "role": "publisher",
            "tenant_id": "pub-p",
        },
        headers=admin,
    )
    assert created.status_code == 201 and created.json()["role"] == "publisher"
    weak = client.post(
        "/api/v1/users",
        json={"username": "bob", "password": "short", "role": "admin"},
        headers=admin,
    )
    assert weak.status_code == 422 and weak.json()["error"]["field"] == "password"
    ghost = client.post(
        "/api/v1/users",
        json={
            "username": "bob",
            "password": "long enough pw",
            "role": "advertiser",
            "tenant_id": "nope",
        },
        headers=admin,
    )
    assert ghost.status_code == 404 and ghost.json()["error"]["field"] == "tenant_id"
    taken = client.post(
        "/api/v1/users",
        json={"username": "anna", "password": "long enough pw", "role": "admin"},
        headers=admin,
    )
    assert taken.status_code == 422 and taken.json()["error"]["field"] == "username"
    user_id = created.json()["id"]
    disabled = client.patch(f"/api/v1/users/{user_id}", json={"disabled": True}, headers=admin)
    assert disabled.json()["disabled"] is True
    assert login(client, "anna", "long enough pw").status_code == 401
    assert client.get("/api/v1/users", headers=tenants["pub-p"].headers).status_code == 403
