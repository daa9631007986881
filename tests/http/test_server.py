"""The lean HTTP server: keep-alive, pipelining, limits, overload and graceful stop."""

import asyncio

from openbid.http.server import HttpServer, Response, Router


async def _echo(request):
    return Response(
        200, request.method.encode() + b" " + request.path.encode() + b" " + request.body
    )


async def _exchange(port, raw: bytes, read_until_close=True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5) if read_until_close else b""
    writer.close()
    return data


def _run(coro):
    return asyncio.run(coro)


def test_keep_alive_and_pipelined_requests_are_answered_in_order():
    async def main():
        router = Router()
        router.add("POST", "/echo", _echo)
        server = HttpServer(router)
        port = await server.start()
        raw = (
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none"
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\ntwo"
            b"GET /missing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        reply = await _exchange(port, raw)
        await server.stop()
        return reply

    reply = _run(main())
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert reply.index(b"POST /echo one") < reply.index(b"POST /echo two")
    assert b"HTTP/1.1 404 Not Found" in reply


def test_oversized_body_gets_413_and_the_connection_closes():
    async def main():
        server = HttpServer(_echo, max_body_bytes=10)
        port = await server.start()
        reply = await _exchange(
            port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n01234567890"
        )
        chunked = await _exchange(
            port,
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n",
        )
        await server.stop()
        return reply, chunked

    reply, chunked = _run(main())
    assert reply.startswith(b"HTTP/1.1 413")
    assert chunked.startswith(b"HTTP/1.1 413")


def test_malformed_request_gets_400():
    async def main():
        server = HttpServer(_echo)
        port = await server.start()
        reply = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        await server.stop()
        return reply

    assert _run(main()).startswith(b"HTTP/1.1 400")


def test_overload_answers_503_with_retry_after_instead_of_hanging():
    async def main():
        release = asyncio.Event()

        async def slow(request):
            await release.wait()
            return Response(200, b"done")

        server = HttpServer(slow, max_in_flight=1)
        port = await server.start()
        first = asyncio.create_task(
            _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        )
        while server.in_flight == 0:
            await asyncio.sleep(0.005)
        second = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        release.set()
        first_reply = await first
        await server.stop()
        return first_reply, second

    first, second = _run(main())
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"done")
    assert second.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in second


def test_handler_failure_is_a_500_not_a_dead_server():
    async def main():
        async def broken(request):
            raise RuntimeError("boom")

        server = HttpServer(broken)
        port = await server.start()
        reply = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        again = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await server.stop()
        return reply, again

    reply, again = _run(main())
    assert reply.startswith(b"HTTP/1.1 500") and again.startswith(b"HTTP/1.1 500")


def test_stop_lets_requests_in_flight_finish():
    async def main():
        started = asyncio.Event()

        async def slow(request):
            started.set()
            await asyncio.sleep(0.2)
            return Response(200, b"finished")

        server = HttpServer(slow)
        port = await server.start()
        pending = asyncio.create_task(_exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
        await started.wait()
        await server.stop(grace_s=5)
        return await pending

    reply = _run(main())
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"finished")
    assert b"connection: close" in reply


def test_router_method_not_allowed_and_head():
    async def main():
        router = Router()
        router.add("GET", "/healthz", _echo, safe=True)
        router.add("GET", "/ad", _echo)  # runs an auction: HEAD must not
        server = HttpServer(router)
        port = await server.start()
        post = await _exchange(
            port, b"POST /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        head = await _exchange(
            port, b"HEAD /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        head_ad = await _exchange(
            port, b"HEAD /ad HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        await server.stop()
        return post, head, head_ad

    post, head, head_ad = _run(main())
    assert post.startswith(b"HTTP/1.1 405") and b"allow: GET" in post
    assert head.startswith(b"HTTP/1.1 200")
    assert head_ad.startswith(b"HTTP/1.1 405")


def test_an_announced_oversize_body_is_refused_before_it_is_sent():
    async def main():
        server = HttpServer(_echo, max_body_bytes=10)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000000\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)  # no body sent: answered anyway
        writer.close()
        await server.stop()
        return reply

    assert _run(main()).startswith(b"HTTP/1.1 413")


def test_request_line_and_header_limits():
    async def main():
        server = HttpServer(_echo)
        port = await server.start()
        long_url = await _exchange(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        many = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
        big_head = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
        await server.stop()
        return long_url, big_head

    long_url, big_head = _run(main())
    assert long_url.startswith(b"HTTP/1.1 414")
    assert big_head.startswith(b"HTTP/1.1 431")


def test_a_header_value_with_a_line_break_is_never_written():
    async def splitting(request):
        return Response(302, headers=[("location", "https://a.example/\r\nset-cookie: s=1")])

    async def main():
        server = HttpServer(splitting)
        port = await server.start()
        reply = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await server.stop()
        return reply

    reply = _run(main())
    assert reply.startswith(b"HTTP/1.1 500")
    assert b"set-cookie" not in reply


def test_a_client_that_pipelines_without_reading_is_not_buffered_without_bound():
    served = []

    async def count(request):
        served.append(1)
        return Response(200, b"x" * 4096)

    async def main():
        server = HttpServer(count)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(high=1 << 24)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n" * 20_000)  # never reads
        deadline = asyncio.get_running_loop().time() + 5
        last = -1
        while len(served) != last and asyncio.get_running_loop().time() < deadline:
            last = len(served)
            await asyncio.sleep(0.2)
        stalled_at = len(served)
        # Reading lets it go on.
        deadline = asyncio.get_running_loop().time() + 10
        while len(served) <= stalled_at and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait_for(reader.read(1 << 16), 5)
        writer.transport.abort()
        await server.stop(grace_s=0.5)
        return stalled_at, len(served)

    stalled_at, after_reading = _run(main())
    # 80 MB of responses were asked for; the server stopped after the socket buffers filled.
    assert stalled_at < 2_000
    assert after_reading > stalled_at


def test_client_address_believes_only_trusted_proxies():
    import ipaddress

    from openbid.http.server import Request, client_address

    lb = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]

    def ip(peer, xff=None, trusted=lb):
        headers = {"x-forwarded-for": xff} if xff is not None else {}
        return client_address(Request("GET", "/ad", "", headers, b"", peer), trusted)

    # A client talking to us directly cannot choose its IP.
    assert ip("198.51.100.7", "1.2.3.4") == "198.51.100.7"
    # Behind our balancer: the address it saw, not what the client prepended.
    assert ip("10.0.0.5", "1.2.3.4, 198.51.100.7") == "198.51.100.7"
    # Two of our proxies in a row.
    assert ip("10.0.0.5", "198.51.100.7, 10.9.9.9") == "198.51.100.7"
    # Garbage in the chain stops at the last address we can vouch for.
    assert ip("10.0.0.5", "198.51.100.7, not-an-ip") == "10.0.0.5"
    assert ip("::1", "2001:db8::1") == "2001:db8::1"
    assert ip("10.0.0.5", "1.2.3.4", trusted=[]) == "10.0.0.5"


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not():
    async def slow(request):
        await asyncio.sleep(0.5)  # longer than the idle timeout: serving is not idling
        return Response(200, b"slow")

    async def main():
        router = Router()
        router.add("POST", "/echo", _echo)
        router.add("GET", "/slow", slow)
        server = HttpServer(router, idle_timeout_s=0.3)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = 0
        while loop.time() - started < 0.9:  # three idle timeouts, a request every 0.1 s
            writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
            await reader.readuntil(b"POST /echo hi")
            answers += 1
            await asyncio.sleep(0.1)
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"slow"), 2)
        idle_from = loop.time()
        closed = await asyncio.wait_for(reader.read(), 2)  # b"" once the server closes
        idle_for = loop.time() - idle_from
        writer.close()
        await server.stop()
        return answers, closed, idle_for

    answers, closed, idle_for = _run(main())
    assert answers >= 5 and closed == b""
    assert 0.25 <= idle_for < 1.0


# --- issue 13, sections 1 and 8: limits on connections, descriptors and stopping


async def _request(port, raw=b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"):
    """Opens a connection, sends `raw`, reads one response head; returns (reader, writer, head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


def _counter(metric, *labels):
    return metric.labels(*labels).value


def test_at_the_connection_cap_the_longest_idle_connection_is_shed(caplog):
    from openbid.http.metrics import CONNECTIONS_DROPPED

    async def ok(request):
        return Response(200, b"")

    async def main():
        server = HttpServer(ok, max_connections=3)
        port = await server.start()
        before = _counter(CONNECTIONS_DROPPED, "idle_at_cap")
        idle = []
        for _ in range(3):  # three idle keep-alive connections, oldest first
            reader, writer, _ = await _request(port)
            idle.append((reader, writer))
            await asyncio.sleep(0.01)
        _, newest, head = await _request(port)  # the fourth: served, the oldest shed
        oldest_closed = await asyncio.wait_for(idle[0][0].read(), 5)
        idle[1][1].write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # the others still serve
        second = await asyncio.wait_for(idle[1][0].readuntil(b"\r\n\r\n"), 5)
        shed = _counter(CONNECTIONS_DROPPED, "idle_at_cap") - before
        for _, writer in idle:
            writer.close()
        newest.close()
        await server.stop()
        return head, oldest_closed, second, shed

    with caplog.at_level("WARNING", logger="openbid.http.server"):
        head, oldest_closed, second, shed = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert oldest_closed == b""  # closed, without a reply
    assert shed == 1
    assert any("shed idle connections" in r.getMessage() for r in caplog.records)


def test_at_the_cap_with_no_idle_connection_a_new_one_gets_503():
    from openbid.http.metrics import CONNECTIONS_DROPPED

    release = None

    async def held(request):
        await release.wait()
        return Response(200, b"done")

    async def main():
        nonlocal release
        release = asyncio.Event()
        server = HttpServer(held, max_connections=2)
        port = await server.start()
        before = _counter(CONNECTIONS_DROPPED, "refused_at_cap")
        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            busy.append((reader, writer))
        while server.in_flight < 2:
            await asyncio.sleep(0.005)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 5)
        release.set()
        answers = [await asyncio.wait_for(r.readuntil(b"done"), 5) for r, _ in busy]
        for _, w in busy:
            w.close()
        writer.close()
        await server.stop()
        return refused, answers, _counter(CONNECTIONS_DROPPED, "refused_at_cap") - before

    refused, answers, counted = asyncio.run(main())
    assert refused.startswith(b"HTTP/1.1 503") and b"too many connections" in refused
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert counted == 1


_EMFILE_SERVER = """
import asyncio, resource, sys
import uvloop
from openbid.http.server import HttpServer, Response, Router
from openbid.obs import metrics_payload

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

async def main():
    router = Router()
    async def healthz(request):
        return Response(200, b'{"status":"ok"}')
    async def metrics(request):
        return Response(200, metrics_payload(), "text/plain")
    router.add("GET", "/healthz", healthz)
    router.add("GET", "/metrics", metrics)
    server = HttpServer(router, max_connections=1000)  # a cap the descriptors cannot hold
    port = await server.start("127.0.0.1", 0)
    print(port, flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def test_out_of_descriptors_is_logged_counted_and_healthz_still_answers(tmp_path):
    # With 64 descriptors and a cap of 1,000, idle connections exhaust the descriptors:
    # accept fails with EMFILE. It must be logged and counted, the longest-idle connections
    # shed, and /healthz answered on a new connection.
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(_EMFILE_SERVER)
    errors = (tmp_path / "stderr").open("w+")
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=errors, text=True
    )
    try:
        port = int(child.stdout.readline())

        async def main():
            idle = []
            for _ in range(80):  # more than the server has descriptors for
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), 2
                    )
                except (OSError, TimeoutError):
                    continue
                idle.append(writer)
            await asyncio.sleep(0.2)
            answers = []
            for path in (b"/healthz", b"/metrics"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path)
                answers.append(await asyncio.wait_for(reader.read(), 10))
                writer.close()
            for writer in idle:
                writer.close()
            return answers

        healthz, metrics = asyncio.run(main())
    finally:
        child.kill()
        child.wait()
    errors.seek(0)
    log = errors.read()
    assert healthz.startswith(b"HTTP/1.1 200") and healthz.endswith(b'{"status":"ok"}')
    assert b'openbid_http_accept_errors_total{error="EMFILE"}' in metrics
    assert b'openbid_http_connections_dropped_total{reason="idle_out_of_fds"}' in metrics
    assert "out of file descriptors" in log


def test_stop_closes_every_connection_and_never_outlives_its_grace():
    # A handler that never returns: stop() gives it its grace, then closes its connection.
    # (On Python >= 3.12.1 and on uvloop, Server.wait_closed() waits for every connection:
    # left open, this one would make stop() hang for good.)
    import uvloop

    async def forever(request):
        await asyncio.Event().wait()

    async def main():
        server = HttpServer(forever)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        while server.in_flight == 0:
            await asyncio.sleep(0.005)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(server.stop(grace_s=0.2), 3)
        try:
            busy_end = await asyncio.wait_for(reader.read(), 3)
        except ConnectionResetError:
            busy_end = b""
        idle_end = await asyncio.wait_for(idle_reader.read(), 3)
        writer.close()
        idle_writer.close()
        return busy_end, idle_end

    for run in (asyncio.run, uvloop.run):
        assert run(main()) == (b"", b"")


def test_pipelined_requests_are_parsed_no_further_than_the_bound():
    from openbid.http.connection import FEED_SLICE_BYTES

    async def slow(request):
        await asyncio.sleep(0.05)
        return Response(200, b"")

    async def main():
        server = HttpServer(slow, max_pipelined=8)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
        writer.write(request * 3000)
        peak = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            peak = max(peak, server.stats()["queued"])
        writer.transport.abort()
        await server.stop(grace_s=0)
        return peak, len(request)

    peak, size = asyncio.run(main())
    assert 0 < peak <= 8 + FEED_SLICE_BYTES // size + 1


def test_a_stopped_server_can_start_again():
    async def ok(request):
        return Response(200, b"again")

    async def main():
        server = HttpServer(ok)
        await server.start()
        await server.stop()
        port = await server.start()
        reply = await _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await server.stop()
        return reply

    assert _run(main()).endswith(b"again")


def test_client_address_reads_a_forwarded_chain_split_over_several_header_lines():
    # The load balancer (10.0.0.1) appended its own X-Forwarded-For line after the client's
    # address line instead of joining them: the chain must read the same.
    import ipaddress

    from openbid.http.server import client_address

    trusted = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]

    async def who(request):
        return Response(200, client_address(request, trusted).encode(), "text/plain")

    async def main():
        server = HttpServer(who)
        port = await server.start()
        reply = await _exchange(
            port,
            b"GET / HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 203.0.113.9\r\n"
            b"x-forwarded-for: 10.0.0.1\r\nconnection: close\r\n\r\n",
        )
        await server.stop()
        return reply

    assert _run(main()).endswith(b"\r\n\r\n203.0.113.9")


def test_handlers_of_test_doubles_may_stream_send_raw_bytes_or_reset():
    from openbid.http.server import RawResponse, ResetConnection, StreamResponse

    async def pieces(*parts):
        for part in parts:
            await asyncio.sleep(0.01)
            yield part

    async def double(request):
        if request.path == "/raw":
            return RawResponse(b"\x16\x03 not http")
        if request.path == "/stream":
            return StreamResponse(200, 6, pieces(b"abc", b"def"), "text/plain")
        if request.path == "/short":  # announces 6 bytes, sends 3: the connection must end
            return StreamResponse(200, 6, pieces(b"abc"), "text/plain")
        return ResetConnection()

    async def main():
        server = HttpServer(double)
        port = await server.start()
        raw = await _exchange(port, b"GET /raw HTTP/1.1\r\nhost: x\r\n\r\n")
        streamed = await _exchange(
            port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\nGET /raw HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        short = await _exchange(port, b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n")
        try:
            reset = await _exchange(port, b"GET /reset HTTP/1.1\r\nhost: x\r\n\r\n")
        except ConnectionResetError:
            reset = "reset"
        await server.stop()
        return raw, streamed, short, reset

    raw, streamed, short, reset = _run(main())
    assert raw == b"\x16\x03 not http"
    assert streamed.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n")
    assert streamed.endswith(b"\r\n\r\nabcdef\x16\x03 not http")  # the next request served
    assert short.endswith(b"\r\n\r\nabc")
    assert reset == "reset"
