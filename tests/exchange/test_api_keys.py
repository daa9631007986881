"""The OpenRTB front door's API keys: valid keys are remembered between catalog refreshes,
and a refresh that drops or rotates a key ends it at once."""

import asyncio

from openbid.config import ExchangeConfig
from openbid.domain import hash_api_key
from openbid.exchange.server import ExchangeServer
from openbid.http.server import Request
from openbid.stores.catalog import Catalog, PublisherRow
from openbid.stores.memory import MemoryCounterStore


class _Registry:
    def reload(self, partners):
        self.partners = partners


class _Exchange:
    registry = _Registry()


def _server(tmp_path) -> tuple[ExchangeServer, Catalog]:
    catalog = Catalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.migrate()
    catalog.add_publisher("pub", "Pub", api_key="old-key")
    server = ExchangeServer(_Exchange(), catalog, MemoryCounterStore(), ExchangeConfig())
    server.refresh()
    return server, catalog


def _status(server: ExchangeServer, key: str) -> int:
    # A body that cannot be an OpenRTB request: 400 once authenticated, 401 before.
    request = Request("POST", "/openrtb2/auction", "", {"x-api-key": key}, b"[]", "127.0.0.1")
    return asyncio.run(server.handle_auction(request)).status


def test_a_valid_key_keeps_working_and_a_wrong_one_is_not_remembered(tmp_path):
    server, catalog = _server(tmp_path)
    assert [_status(server, "old-key") for _ in range(3)] == [400, 400, 400]
    assert [_status(server, "guess") for _ in range(3)] == [401, 401, 401]
    assert _status(server, "") == 401
    assert list(server._keys[1]) == ["old-key"]  # only the valid key, as sent
    catalog.close()


def test_a_rotated_key_stops_working_at_the_next_refresh(tmp_path):
    server, catalog = _server(tmp_path)
    assert _status(server, "old-key") == 400
    with catalog._session() as session, session.begin():
        session.get(PublisherRow, "pub").api_key_sha256 = hash_api_key("new-key")
    assert _status(server, "old-key") == 400  # until the refresh: the catalog is cached
    server.refresh()
    assert (_status(server, "old-key"), _status(server, "new-key")) == (401, 400)
    catalog.close()
