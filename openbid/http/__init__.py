"""openbid's HTTP/1.1: the server every openbid server runs on (`server`) and the client the
fan-out and notices use (`client`), on asyncio and httptools (llhttp)."""
