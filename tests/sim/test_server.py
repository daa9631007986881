"""The DSP servers over real HTTP: they bid as the oracle says and play their faults."""

import asyncio
import http.client
import time

import httptools
import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from openbid.sim.cli import sim_command
from openbid.sim.model import FAULT_KINDS
from openbid.sim.server import DspServersThread, start_dsp_servers
from openbid.sim.traffic import send_traffic


class _Replies:
    """Parses the HTTP responses arriving on one connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, bytes]] = []
        self._body: list[bytes] = []
        self.head_at: float | None = None

    def on_headers_complete(self) -> None:
        self.head_at = time.perf_counter()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), b"".join(self._body)))
        self._body = []


def _post(body: bytes) -> bytes:
    return (
        b"POST /openrtb2 HTTP/1.1\r\nhost: dsp\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )


async def _exchange(port: int, payload: bytes, replies_wanted: int = 1):
    """Sends raw bytes; returns (replies, error, seconds to the last reply, seconds to the head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = _Replies()
    started = time.perf_counter()
    writer.write(payload)
    error = None
    try:
        while len(replies.done) < replies_wanted:
            data = await reader.read(65536)
            if not data:
                error = "closed"
                break
            replies.parser.feed_data(data)
    except ConnectionResetError:
        error = "reset"
    finally:
        writer.close()
    finished = time.perf_counter() - started
    head = None if replies.head_at is None else replies.head_at - started
    return replies.done, error, finished, head


def test_each_dsp_bids_exactly_when_the_oracle_says(market):
    batch = market.generate(400, seed=31)
    outcomes = market.dsp_outcomes(batch)
    with DspServersThread(market, dsps=["atlas", "ember"], simulate_latency=False) as servers:
        for name in ("atlas", "ember"):
            j = market.dsp(name).index
            port = servers.ports[name]
            connection = http.client.HTTPConnection("127.0.0.1", port)
            for row, body in enumerate(batch.bodies):
                fault = FAULT_KINDS[outcomes.fault[row, j]]
                connection.request("POST", "/openrtb2", body, {"content-type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                if fault == "http_5xx":
                    assert response.status in (500, 502, 503)
                    continue
                bid = outcomes.bid[row, j]
                assert response.status == (200 if bid else 204), (name, row, fault)
                if bid:
                    answer = msgspec.json.decode(payload)
                    assert answer["id"] == batch.request_ids[row]
                    (seat,) = answer["seatbid"]
                    (offer,) = seat["bid"]
                    assert seat["seat"] == name
                    assert round(offer["price"] * 1e6) == outcomes.price_micros[row, j]
                    assert offer["price"] >= batch.floor_cpm[row]
                    assert offer["nurl"].startswith(f"http://127.0.0.1:{port}/win?")
                    assert "${AUCTION_PRICE}" in offer["burl"]
                    assert offer["adomain"] and offer["crid"].startswith(name)
            connection.request("GET", "/win?bid=x&price=1.2")
            assert connection.getresponse().read() == b""
            connection.request("GET", "/stats")
            stats = msgspec.json.decode(connection.getresponse().read())
            assert stats["requests"] == len(batch)
            assert stats["bids"] == int(
                outcomes.bid[:, j].sum() - (outcomes.bid[:, j] & (outcomes.fault[:, j] == 2)).sum()
            )
            assert stats["notices"] == {"win": 1}
            connection.close()


def test_faults_are_played_for_real(faulty_market):
    market = faulty_market
    dsp = market.dsp("fjord")
    faults = dsp.config.faults
    batch = market.generate(120, seed=5)
    outcomes = market.dsp_outcomes(batch)
    planted = [FAULT_KINDS[k] for k in outcomes.fault[:, dsp.index]]
    assert set(planted) == set(FAULT_KINDS[1:])

    async def run(port: int):
        return await asyncio.gather(*(_exchange(port, _post(body)) for body in batch.bodies))

    with DspServersThread(market, dsps=["fjord"]) as servers:
        results = asyncio.run(run(servers.ports["fjord"]))
        stats = servers.stats()["fjord"]
    for kind, (replies, error, elapsed_s, head_s) in zip(planted, results, strict=True):
        if kind == "connection_reset":
            assert replies == [] and error in ("reset", "closed")
            continue
        ((status, body),) = replies
        if kind == "http_5xx":
            assert status in (500, 502, 503)
        elif kind == "malformed_json":
            assert status == 200
            with pytest.raises(msgspec.DecodeError):
                msgspec.json.decode(body)
        elif kind == "timeout":
            # Event loop timers may fire up to a millisecond early.
            assert elapsed_s >= 0.95 * faults.timeout_ms / 1000
        elif kind == "slow_body":
            msgspec.json.decode(body)
            # The body trickles in after the head, over at least the configured time.
            assert elapsed_s - head_s >= 0.5 * faults.slow_body_ms / 1000
    counted = {kind: planted.count(kind) for kind in set(planted)}
    assert stats["faults"] == counted


def test_responses_on_one_connection_keep_request_order(market):
    batch = market.generate(300, seed=8)
    outcomes = market.dsp_outcomes(batch)
    j = market.dsp("ember").index
    clean = np.flatnonzero((outcomes.fault[:, j] == 0) & outcomes.bid[:, j])
    slow_first = sorted(clean, key=lambda row: -outcomes.latency_ms[row, j])
    first, second = slow_first[0], slow_first[-1]
    assert outcomes.latency_ms[first, j] > outcomes.latency_ms[second, j]
    payload = _post(batch.bodies[first]) + _post(batch.bodies[second])
    with DspServersThread(market, dsps=["ember"]) as servers:
        replies, error, _, _ = asyncio.run(_exchange(servers.ports["ember"], payload, 2))
    assert error is None
    ids = [msgspec.json.decode(body)["id"] for _, body in replies]
    assert ids == [batch.request_ids[first], batch.request_ids[second]]


def test_bad_requests_get_400_and_unknown_paths_404(market):
    with DspServersThread(market, dsps=["atlas"], simulate_latency=False) as servers:
        connection = http.client.HTTPConnection("127.0.0.1", servers.ports["atlas"])
        connection.request("POST", "/openrtb2", b'{"id": 5}')
        response = connection.getresponse()
        assert response.status == 400
        assert b"not an OpenRTB bid request" in response.read()
        connection.request("GET", "/nothing")
        response = connection.getresponse()
        response.read()
        assert response.status == 404
        assert servers.stats()["atlas"]["bad_requests"] == 1


def test_the_traffic_sender_counts_what_the_oracle_predicts(market):
    batch = market.generate(600, seed=13)
    outcomes = market.dsp_outcomes(batch)
    j = market.dsp("cobalt").index
    faults = outcomes.fault[:, j]

    async def run():
        servers = await start_dsp_servers(market, dsps=["cobalt"], simulate_latency=False)
        try:
            return await send_traffic(
                servers.urls["cobalt"], batch.bodies, rate_per_s=5000, concurrency=16
            )
        finally:
            await servers.stop()

    report = asyncio.run(run())
    assert report.sent == len(batch)
    arrived = outcomes.bid[:, j] & np.isin(faults, [0, 1, 4])
    assert report.bids == int(arrived.sum())
    assert report.malformed_responses == int((faults == 3).sum())
    assert report.statuses.get("connection_reset", 0) == int((faults == 5).sum())
    assert len(report.latencies_ms) == len(batch) - int((faults == 5).sum())


def test_sim_command_runs_against_an_endpoint(market):
    with DspServersThread(market, dsps=["fjord"], simulate_latency=False) as servers:
        result = CliRunner().invoke(
            sim_command,
            [
                "--target",
                servers.urls["fjord"],
                "--rate",
                "400",
                "--duration",
                "0.5",
                "--seed",
                "3",
            ],
        )
        stats = servers.stats()["fjord"]
    assert result.exit_code == 0, result.output
    assert "200 requests" in result.output or "200 (generated" in result.output
    assert "status 204" in result.output and "latency p50" in result.output
    assert stats["requests"] == 200


def test_sim_command_explains_a_bad_target():
    result = CliRunner().invoke(sim_command, ["--target", "ftp://example", "--duration", "0.1"])
    assert result.exit_code != 0
    assert "expected an http:// URL" in result.output


def test_the_sender_adds_extra_headers(market):
    received: list[bytes] = []

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            received.append(data)
            self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")

    async def run():
        server = await asyncio.get_running_loop().create_server(Recorder, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        body = market.generate(1, seed=1).bodies[0]
        report = await send_traffic(
            f"http://127.0.0.1:{port}/auction?x=1", [body], 10, headers={"x-api-key": "k1"}
        )
        server.close()
        return report

    report = asyncio.run(run())
    assert report.statuses == {"204": 1}
    head = b"".join(received).split(b"\r\n\r\n")[0]
    assert head.startswith(b"POST /auction?x=1 HTTP/1.1")
    assert b"\r\nx-api-key: k1\r\n" in head
