"""The `[server]` keys reach the HTTP server `openbid up` runs."""

import asyncio
import json

from openbid.config import load_config
from openbid.platform import Platform


def test_server_keys_from_the_config_govern_the_running_server(tmp_path):
    config = load_config(
        environ={
            "OPENBID_SERVER__PORT": "0",
            "OPENBID_SERVER__IDLE_TIMEOUT_S": "0.3",
            "OPENBID_SERVER__HEADER_TIMEOUT_S": "5",
            "OPENBID_SERVER__REQUEST_TIMEOUT_S": "0.6",
            "OPENBID_SERVER__MAX_HEADER_COUNT": "5",
            "OPENBID_SERVER__MAX_CONNECTIONS": "7",
            "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
            "OPENBID_EVENTS__ROLL_IN_SUBPROCESS": "false",
            "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        }
    )

    async def main():
        platform = Platform(config)
        platform.open()
        port = await platform.serve()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            healthz = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            # The body, then the close that 0.3 s idle brings (the default, 75 s, would time out).
            idle_end = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            headers = b"".join(b"x-h%d: v\r\n" % i for i in range(6))
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
            too_many = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            # A body trickled faster than the idle timeout: cut by the request timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\n\r\n")
            for _ in range(20):
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"a")
            trickled = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return healthz, idle_end, too_many, trickled, platform.server.max_connections
        finally:
            await platform.close()

    healthz, idle_end, too_many, trickled, cap = asyncio.run(main())
    assert healthz.startswith(b"HTTP/1.1 200")
    assert json.loads(idle_end)["status"] in ("ok", "degraded")
    assert too_many.startswith(b"HTTP/1.1 431")
    assert trickled.startswith(b"HTTP/1.1 408")
    assert cap == 7
