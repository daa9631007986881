"""The fan-out client against upstreams that misbehave in every way a DSP can."""

import asyncio
import contextlib
import gzip

import pytest

from openbid.demand.breaker import CircuitBreaker, CircuitState
from openbid.http.client import FanoutClient, UpstreamError

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"id":"r1"}'


async def _serve(behaviour):
    """A raw TCP upstream: `behaviour(head, body, writer)` answers each request (or not), and
    returns whether to go on reading the connection."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,  # a GET
                )
                body = await reader.readexactly(length)
                if not await behaviour(head, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _call(behaviour, timeout_s=0.3, calls=1, gzip_body=False):
    server, port = await _serve(behaviour)
    client = FanoutClient()
    results = []
    for _ in range(calls):
        try:
            response = await client.post(
                f"http://127.0.0.1:{port}/bid",
                b'{"id":"r1"}',
                timeout_s=timeout_s,
                gzip_body=gzip_body,
            )
            results.append((response.status, response.body))
        except UpstreamError as error:
            results.append(error.kind)
    client.close()
    server.close()
    await server.wait_closed()
    return results


async def _answer_ok(head, body, writer):
    writer.write(OK)
    await writer.drain()
    return True


@contextlib.asynccontextmanager
async def _upstream(behaviour, path="/bid"):
    """A raw upstream (`_serve`) and a client for it, as (client, url); both closed after."""
    server, port = await _serve(behaviour)
    client = FanoutClient()
    try:
        yield client, f"http://127.0.0.1:{port}{path}"
    finally:
        client.close()
        server.close()


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_reuses_one_connection():
    connections = []

    async def ok(head, body, writer):
        connections.append(writer.get_extra_info("peername"))
        writer.write(OK)
        await writer.drain()
        return True

    results = run(_call(ok, calls=5))
    assert results == [(200, b'{"id":"r1"}')] * 5
    assert len(set(connections)) == 1


async def _never(head, body, writer):
    await asyncio.sleep(5)
    return False


async def _error_500(head, body, writer):
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
    return True


async def _garbage(head, body, writer):
    writer.write(b"\x00\xffnot http at all\r\n\r\n")
    await writer.drain()
    return True


async def _reset(head, body, writer):
    writer.transport.abort()
    return False


async def _slow_body(head, body, writer):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
    await writer.drain()
    for _ in range(20):
        await asyncio.sleep(0.05)
        writer.write(b" ")
        await writer.drain()
    return False


async def _huge(head, body, writer):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3000000\r\n\r\n" + b" " * 3_000_000)
    await writer.drain()
    return False


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (_never, "timeout"),
        (_garbage, "malformed"),
        (_reset, "reset"),
        (_slow_body, "timeout"),
        (_huge, "too_large"),
    ],
)
def test_faults_are_classified_and_bounded_by_the_deadline(behaviour, expected):
    assert run(_call(behaviour, timeout_s=0.3)) == [expected]


def test_5xx_is_a_response_not_an_exception():
    assert run(_call(_error_500)) == [(500, b"")]


def test_connection_refused_is_a_connect_error():
    async def main():
        client = FanoutClient()
        try:
            await client.post("http://127.0.0.1:1/bid", b"{}", timeout_s=0.5)
        except UpstreamError as error:
            return error.kind

    assert run(main()) == "connect"


def test_client_recovers_after_a_timeout_on_the_same_host():
    state = {"calls": 0}

    async def flaky(head, body, writer):
        state["calls"] += 1
        if state["calls"] == 1:
            await asyncio.sleep(1)
            return False
        writer.write(OK)
        await writer.drain()
        return True

    assert run(_call(flaky, timeout_s=0.2, calls=3)) == [
        "timeout",
        (200, b'{"id":"r1"}'),
        (200, b'{"id":"r1"}'),
    ]


def test_gzip_request_and_response():
    seen = {}

    async def gzipped(head, body, writer):
        seen["head"] = head
        seen["body"] = gzip.decompress(body)
        payload = gzip.compress(b'{"id":"r1","seatbid":[]}')
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        return True

    assert run(_call(gzipped, gzip_body=True)) == [(200, b'{"id":"r1","seatbid":[]}')]
    assert seen["body"] == b'{"id":"r1"}'
    assert b"content-encoding: gzip" in seen["head"]


def test_circuit_breaker_opens_probes_and_closes():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10)
    for t in range(3):
        assert breaker.allow(float(t))
        breaker.record_failure(float(t))
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow(5.0)
    assert breaker.allow(12.5)  # the probe
    assert not breaker.allow(12.6)  # only one probe at a time
    breaker.record_failure(12.7)
    assert breaker.state is CircuitState.OPEN and not breaker.allow(15.0)
    assert breaker.allow(23.0)
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow(23.1)


def test_reply_time_is_on_the_precise_clock_under_uvloop():
    # uvloop's loop.time() ticks in whole milliseconds: DSP latencies measured on it would
    # read 0 or 1 ms. Replies are stamped with time.perf_counter() instead.
    import time

    import uvloop

    async def main():
        server, port = await _serve(_answer_ok)
        client = FanoutClient()
        before = time.perf_counter()
        response = await client.post(f"http://127.0.0.1:{port}/bid", b"{}", timeout_s=1.0)
        after = time.perf_counter()
        client.close()
        server.close()
        await server.wait_closed()
        return before, response.received_at, after

    before, received_at, after = uvloop.run(main())
    assert before < received_at <= after


def test_a_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"\0" * (50 << 20), compresslevel=9)  # 50 MiB in about 50 KB

    async def answer(head, body, writer):
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (len(bomb), bomb)
        )
        await writer.drain()
        return True

    assert len(bomb) < (1 << 20)  # under the wire cap: only the inflated size is over it
    assert run(_call(answer, timeout_s=2.0, gzip_body=True)) == ["too_large"]


def test_urls_a_dsp_chose_cannot_reach_our_own_network():
    async def ok(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(ok, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        try:
            with pytest.raises(UpstreamError) as refused:
                await client.get(f"http://127.0.0.1:{port}/win", timeout_s=1.0, public_only=True)
            allowed = await client.get(f"http://127.0.0.1:{port}/win", timeout_s=1.0)
        finally:
            client.close()
            server.close()
        return refused.value.kind, allowed.status

    assert run(main()) == ("forbidden", 200)


def test_connections_per_host_are_capped():
    async def main():
        server, port = await _serve(_never)
        client = FanoutClient(max_connections_per_host=2)
        url = f"http://127.0.0.1:{port}/bid"
        futures = [client.start_post(url, b"{}", timeout_s=0.3) for _ in range(3)]
        outcomes = []
        for future in futures:
            try:
                await future
                outcomes.append("ok")
            except UpstreamError as error:
                outcomes.append(error.kind)
        # The slots come back when the connections close: the next call may open one.
        try:
            await client.post(url, b"{}", timeout_s=0.2)
        except UpstreamError as error:
            outcomes.append(error.kind)
        client.close()
        server.close()
        return outcomes

    assert run(main()) == ["timeout", "timeout", "busy", "timeout"]


def test_notices_past_the_in_flight_bound_are_dropped_and_counted():
    from openbid.exchange.notices import NOTICES, NoticeSender

    async def main():
        server, port = await _serve(_never)
        client = FanoutClient()
        sender = NoticeSender(client, None, max_in_flight=2, timeout_s=0.2, public_only=False)
        before = NOTICES.labels("loss", "dropped")._value.get()
        for i in range(5):
            sender.fire(
                "loss", f"http://127.0.0.1:{port}/l", auction_id="a", bid_id=f"b{i}", dsp="d"
            )
        in_flight = sender.in_flight
        dropped = NOTICES.labels("loss", "dropped")._value.get() - before
        await sender.drain(timeout_s=5)
        client.close()
        server.close()
        return in_flight, dropped

    assert run(main()) == (2, 3)


def test_a_get_whose_reused_connection_was_closed_while_idle_goes_again_on_a_new_one():
    # A DSP closes idle connections after its keep-alive timeout; a notice (a GET,
    # idempotent) written to such a pooled connection gets no response byte: it goes
    # again, it is not a loss.
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK)
            await writer.drain()
            await reader.read()  # wait for the client to go
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        url = f"http://127.0.0.1:{port}/win"
        first = await client.get(url, timeout_s=1.0)
        connections[0].transport.abort()  # the DSP drops the idle connection
        await asyncio.sleep(0)  # (the RST may or may not have arrived: both must work)
        second = await client.get(url, timeout_s=1.0)
        client.close()
        server.close()
        return first.status, second.status, len(connections)

    assert run(main()) == (200, 200, 2)


def test_a_post_is_never_sent_twice():
    # The DSP reads the second POST on a reused connection, then closes without answering:
    # it may have acted on it (a crash, a reset after reading), so the POST is not sent
    # again. The old client retried it, and the DSP saw 3 requests for 2 posts.
    requests = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                requests.append(head.split(b" ")[0])
                if len(requests) == 2:
                    break  # read, then gone
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        url = f"http://127.0.0.1:{port}/bid"
        first = await client.post(url, b"{}", timeout_s=1.0)
        try:
            await client.post(url, b"{}", timeout_s=1.0)
            second = "answered"
        except UpstreamError as error:
            second = error.kind
        await asyncio.sleep(0.1)  # a retry, if any, would reach the server meanwhile
        client.close()
        server.close()
        return first.status, second, len(requests)

    assert run(main()) == (200, "reset", 2)


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("junk_in_same_write", [True, False])
def test_bytes_no_request_asked_for_never_become_the_next_response(junk_in_same_write):
    # A connection's parser is kept across its keep-alive responses: half a response that
    # nobody asked for, sent after ours or while the connection idles, must not be joined
    # to the answer to our next call on it.
    junk = b'HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n{"id":"forged'
    answered = []

    async def answer_then_junk(head, body, writer):
        answered.append(writer.get_extra_info("peername"))
        reply = _ok(b'{"id":"%d"}' % len(answered))
        writer.write(reply + junk if junk_in_same_write else reply)
        await writer.drain()
        if not junk_in_same_write:
            await asyncio.sleep(0.05)
            writer.write(junk)
            await writer.drain()
        return True

    async def main():
        async with _upstream(answer_then_junk) as (client, url):
            first = await client.post(url, b"{}", timeout_s=1.0)
            await asyncio.sleep(0.2)  # the junk arrives while the connection idles
            second = await client.post(url, b"{}", timeout_s=1.0)
            return first.body, second.body, len(set(answered))

    assert run(main()) == (b'{"id":"1"}', b'{"id":"2"}', 2)  # the second on a new connection


def test_one_connection_serves_gets_and_posts_in_turn():
    # GETs parse headers, POSTs to DSPs do not: each kind keeps its own parser on the
    # connection, and switching between them loses nothing.
    seen = []

    async def numbered(head, body, writer):
        seen.append((writer.get_extra_info("peername"), head.split(b" ")[0]))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-n: %d\r\n\r\nok" % len(seen))
        await writer.drain()
        return True

    async def main():
        async with _upstream(numbered, "/x") as (client, url):
            replies = []
            for method in ("POST", "GET", "POST", "POST", "GET"):
                if method == "GET":
                    response = await client.get(url, timeout_s=1.0)
                    replies.append((method, response.body, response.headers["x-n"]))
                else:
                    response = await client.post(url, b"{}", timeout_s=1.0)
                    replies.append((method, response.body, ""))
            return replies

    replies = run(main())
    assert replies == [
        ("POST", b"ok", ""),
        ("GET", b"ok", "2"),
        ("POST", b"ok", ""),
        ("POST", b"ok", ""),
        ("GET", b"ok", "5"),
    ]
    assert len({peer for peer, _ in seen}) == 1


def test_a_past_request_deadline_never_cuts_off_a_later_request_on_the_same_connection():
    # Deadlines are shared timers that answered requests leave behind, not cancel: the
    # one of a first, answered call must not abort the slower second call on its connection.
    delays = iter([0.0, 0.4, 1.0])
    peers = []

    async def answer_late(head, body, writer):
        peers.append(writer.get_extra_info("peername"))
        await asyncio.sleep(next(delays))
        writer.write(OK)
        await writer.drain()
        return True

    async def main():
        async with _upstream(answer_late) as (client, url):
            first = await client.post(url, b"{}", timeout_s=0.2)
            second = await client.post(url, b"{}", timeout_s=1.5)  # outlives the first's 0.2 s
            late = client.start_post(url, b"{}", timeout_s=0.05)  # its own deadline still holds
            try:
                await late
                late_outcome = "answered"
            except UpstreamError as error:
                late_outcome = error.kind
            return first.status, second.status, late_outcome, len(set(peers[:2]))

    assert run(main()) == (200, 200, "timeout", 1)


def test_start_call_reports_each_outcome_to_its_callback_once():
    async def slow_then_ok(head, body, writer):
        if b"slow" in body:
            await asyncio.sleep(1.0)
        writer.write(OK)
        await writer.drain()
        return True

    async def main():
        async with _upstream(slow_then_ok) as (client, url):
            seen = []
            settled = asyncio.Event()

            def on_done(call):
                seen.append(call)
                if len(seen) == 3:
                    settled.set()

            fast = client.start_call(url, b'{"fast":1}', on_done, timeout_s=0.5)
            slow = client.start_call(url, b'{"slow":1}', on_done, timeout_s=0.1)
            refused = client.start_call("http://127.0.0.1:9/bid", b"{}", on_done, timeout_s=0.5)
            await asyncio.wait_for(settled.wait(), 2.0)
            await asyncio.sleep(0.2)  # nothing reports twice
            return (
                len(seen),
                {id(c) for c in seen} == {id(fast), id(slow), id(refused)},
                fast.response.status,
                slow.error.kind,
                refused.error.kind,
            )

    assert run(main()) == (3, True, 200, "timeout", "connect")


def test_interim_responses_are_skipped_and_the_answer_is_the_final_one():
    async def early_hints(head, body, writer):
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(_ok(body))  # each request answered with its own body
        await writer.drain()
        return True

    async def main():
        async with _upstream(early_hints) as (client, url):
            replies = [await client.post(url, b'{"n":%d}' % n, timeout_s=1.0) for n in (1, 2)]
            return [(r.status, r.body) for r in replies]

    assert run(main()) == [(200, b'{"n":1}'), (200, b'{"n":2}')]


def test_a_reply_the_auction_gave_up_on_is_dropped_and_its_connection_reused():
    # The auction's deadline passes first (it fails the call itself); the DSP's answer comes
    # later: it must not be read as the next call's, and the connection goes on serving.
    peers = []

    async def late_first(head, body, writer):
        peers.append(writer.get_extra_info("peername"))
        if b"late" in body:
            await asyncio.sleep(0.1)
        writer.write(_ok(body))
        await writer.drain()
        return True

    async def main():
        async with _upstream(late_first) as (client, url):
            seen = []
            late = client.start_call(url, b'{"late":1}', seen.append, timeout_s=1.0)
            await asyncio.sleep(0.02)
            late.set_exception(UpstreamError("timeout", "no reply by the auction deadline"))
            await asyncio.sleep(0.2)  # the late answer arrives meanwhile
            nxt = await client.post(url, b'{"next":1}', timeout_s=1.0)
            return [c.error.kind for c in seen], nxt.body, len(set(peers))

    assert run(main()) == (["timeout"], b'{"next":1}', 1)


def test_a_public_only_request_never_reuses_a_connection_opened_without_the_check():
    # A DSP-chosen notice URL pointing at another partner's private endpoint must be refused
    # even while a bid connection to that endpoint idles in the pool.
    async def main():
        async with _upstream(_answer_ok) as (client, url):
            bid = await client.post(url, b"{}", timeout_s=1.0)
            plain = await client.get(url, timeout_s=1.0)  # no check asked: may reuse it
            try:
                await client.get(url, timeout_s=1.0, public_only=True)
                notice = "sent"
            except UpstreamError as error:
                notice = error.kind
            return bid.status, plain.status, notice

    assert run(main()) == (200, 200, "forbidden")


# --- issue 13, section 2


def test_one_tls_context_is_built_once_and_off_the_event_loop(monkeypatch):
    import ssl
    import threading

    from openbid.http import upstream

    built_in = []
    real = ssl.create_default_context

    def recording(*args, **kwargs):
        built_in.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(upstream.ssl, "create_default_context", recording)
    monkeypatch.setattr(upstream, "_tls_default", None)

    async def main():
        client = FanoutClient()
        kinds = []
        for url in ("https://127.0.0.1:1/bid", "https://127.0.0.2:1/bid", "https://127.0.0.1:2/"):
            try:
                await client.post(url, b"{}", timeout_s=2.0)
            except UpstreamError as error:
                kinds.append(error.kind)
        client.close()
        return kinds, threading.get_ident()

    kinds, loop_thread = run(main())
    assert kinds == ["connect"] * 3
    assert len(built_in) == 1 and built_in[0] != loop_thread


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"id":"r1"}',
        b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"id":"r1"}',
    ],
    ids=["http10", "http11_close"],
)
def test_a_body_ended_by_the_connection_close_is_a_response(reply):
    async def close_delimited(head, body, writer):
        writer.write(reply)
        await writer.drain()
        return False  # closes: that ends the body

    assert run(_call(close_delimited, calls=2)) == [(200, b'{"id":"r1"}')] * 2


def test_a_body_cut_short_of_its_content_length_is_still_a_reset():
    async def truncated(head, body, writer):
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{"id":"r1"}')
        await writer.drain()
        return False

    assert run(_call(truncated)) == ["reset"]


def test_a_truncated_gzip_body_is_refused():
    whole = gzip.compress(b'{"id":"r1","seatbid":[{"seat":"s","bid":[]}]}')

    async def cut(head, body, writer):
        payload = whole[: len(whole) // 2]
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        await writer.drain()
        return True

    assert run(_call(cut, gzip_body=True)) == ["malformed"]


def test_a_101_reply_fails_the_call_and_logs_no_error():
    errors = []

    async def switching(head, body, writer):
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
        )
        await writer.drain()
        return True  # reads on until the client drops the connection

    async def main():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: errors.append(context)
        )
        results = await _call(switching, timeout_s=1.0)
        await asyncio.sleep(0.05)
        return results

    assert run(main()) == ["malformed"]
    assert errors == []


def test_an_ipv6_host_is_sent_in_brackets():
    heads = []

    async def record(reader, writer):
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_ok(b"{}"))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(record, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        response = await client.get(f"http://[::1]:{port}/win", timeout_s=2.0)
        client.close()
        server.close()
        return response.status, port

    status, port = run(main())
    assert status == 200
    assert b"\r\nhost: [::1]:%d\r\n" % port in heads[0]


def test_a_notice_url_a_dsp_chose_is_percent_encoded_before_it_is_sent():
    lines = []

    async def record(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n"))
        writer.write(_ok(b""))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(record, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        base = f"http://127.0.0.1:{port}"
        for url in (
            f"{base}/win?x=1 2&y=\x7f&p=${{AUCTION_PRICE}}&q=100%&r=%41",
            f"{base}/w\u00e9n?a=\r\nx-injected: 1#fragment",
        ):
            await client.get(url, timeout_s=2.0)
        kinds = []
        for bad in ("http://exa mple.example/win", "ftp://dsp.example/win", "http://[::1/x"):
            try:
                await client.get(bad, timeout_s=1.0)
            except UpstreamError as error:
                kinds.append(error.kind)
        client.close()
        server.close()
        return kinds

    kinds = run(main())
    assert lines[0][0] == b"GET /win?x=1%202&y=%7F&p=$%7BAUCTION_PRICE%7D&q=100%25&r=%41 HTTP/1.1"
    assert lines[1][0] == b"GET /w%C3%A9n?a=x-injected:%201 HTTP/1.1"
    assert not any(line.lower().startswith(b"x-injected") for line in lines[1])
    assert kinds == ["connect"] * 3


@pytest.mark.parametrize("fresh_connection", [True, False])
def test_response_headers_past_the_limit_are_refused(fresh_connection):
    calls = []

    async def huge_head(head, body, writer):
        calls.append(1)
        if len(calls) == 1 and not fresh_connection:
            writer.write(OK)  # a normal first answer: the second is read by the lean parser
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(32):  # 2 MiB of one header value
            writer.write(b"x-filler: " + b"a" * 65536 + b"\r\n")
            await writer.drain()
        writer.write(b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        return True

    results = run(_call(huge_head, timeout_s=3.0, calls=1 if fresh_connection else 2))
    assert results[-1] == "too_large"


def test_a_connection_idle_past_the_client_idle_timeout_is_not_reused():
    peers = []

    async def answer(head, body, writer):
        peers.append(writer.get_extra_info("peername"))
        writer.write(OK)
        await writer.drain()
        return True

    async def main():
        async with _upstream(answer) as (client, url):
            client._idle_timeout_s = 0.1
            for pool in client._pools.values():
                pool.idle_timeout_s = 0.1
            await client.post(url, b"{}", timeout_s=1.0)
            await client.post(url, b"{}", timeout_s=1.0)  # at once: reused
            await asyncio.sleep(0.3)
            await client.post(url, b"{}", timeout_s=1.0)  # idle too long: a new one
        return peers

    peers = run(main())
    assert peers[0] == peers[1] and peers[2] != peers[1]
