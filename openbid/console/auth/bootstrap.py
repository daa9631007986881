"""The first admin: `openbid up --demo` makes one (or gives the existing one a new password
and token), prints its credentials and writes them to `var/demo-credentials` (mode 0600),
so a newcomer logs in at once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from openbid.campaigns.store import CampaignCatalog
from openbid.config import Config
from openbid.console.auth.users import UserStore

DEMO_ADMIN = "admin"


def credentials_path(config: Config) -> Path:
    """`var/demo-credentials`: beside the event log's directory (`var/events`)."""
    return Path(config.events.dir).parent / "demo-credentials"


def ensure_admin(config: Config, username: str = DEMO_ADMIN) -> tuple[str, str, str, Path]:
    """(user name, password, API token, the file they were written to)."""
    catalog = CampaignCatalog(config.stores.catalog_url)
    try:
        catalog.migrate()
        users = UserStore(catalog)
        password = secrets.token_urlsafe(12)
        existing = users.user_by_name(username)
        if existing is None:
            user = users.create_user(username, password, "admin")
        else:
            user = users.update_user(existing.id, password=password, disabled=False) or existing
        _, token = users.create_token(user.id, "demo")
    finally:
        catalog.close()
    path = credentials_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"user: {username}\npassword: {password}\ntoken: {token}\n")
    os.chmod(path, 0o600)  # a file left by an earlier run keeps its old mode otherwise
    return username, password, token, path
