"""What every console request works with: the configuration, the catalog (the buy side's
tables with it), the users, the inventory the console administers, and the reports. Opened
once per console process; routes reach it through `console(request)`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from openbid.campaigns.store import CampaignCatalog
from openbid.config import Config
from openbid.console.auth.users import UserStore
from openbid.console.inventory import Inventory
from openbid.console.reports.service import Reports


@dataclass
class ConsoleContext:
    config: Config
    catalog: CampaignCatalog
    users: UserStore
    inventory: Inventory
    reports: Reports

    @classmethod
    def open(cls, config: Config, *, migrate: bool = True) -> ConsoleContext:
        catalog = CampaignCatalog(config.stores.catalog_url)
        if migrate:
            catalog.migrate()
        settings = config.console
        users = UserStore(
            catalog,
            max_failures=settings.login_max_failures,
            lockout_s=settings.login_lockout_s,
            ip_max_failures=settings.login_ip_max_failures,
            session_ttl_s=settings.session_ttl_s,
        )
        return cls(
            config=config,
            catalog=catalog,
            users=users,
            inventory=Inventory(catalog),
            reports=Reports.from_config(config),
        )

    def close(self) -> None:
        self.reports.close()
        self.catalog.close()


def console(request: Request) -> ConsoleContext:
    """The process's `ConsoleContext` (a FastAPI dependency)."""
    return request.app.state.console
