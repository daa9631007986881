"""openbid's one HTTP/1.1 stack, on asyncio and httptools (llhttp): the server every openbid
server and the simulated DSPs run on (`server`), and the client the fan-out and notices
use (`client`)."""
