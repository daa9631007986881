"""HTTP fuzzing of the real exchange: at least 20,000 mutated real requests a run, seeded.

Seeds are the OpenRTB 2.6 spec's example requests (`../shared/data/openrtb`) and our
request fixtures (valid, repaired, invalid). Each request is mutated at the byte level
(flip, insert, delete, duplicate, truncate, splice a token) or the JSON level (replace a
value anywhere with one of another type or out of range, delete a member, repeat a key),
then sent to the exchange on a loopback port with one bidding DSP behind it, pipelined on
several keep-alive connections. No answer may be a 5xx, every batch must be answered within
its deadline (no hang), and the exchange must still answer `/healthz` at the end (no crash).
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from tests.exchange.test_e2e import API_KEY, ScriptedDsp, start, stop

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "openrtb"
FIXTURES = ROOT / "tests" / "openrtb" / "fixtures"

SEED = 20260513
REQUESTS = 20_000
CONNECTIONS = 6
BATCH = 8  # pipelined requests per round trip on a connection
BATCH_DEADLINE_S = 15.0
MAX_BODY = 60_000  # under the 64 KiB limit, so that a 413 never closes a pipelined batch
ALLOWED = {200, 204, 400, 413}

_TOKENS = [
    b"null", b"-1", b"2", b"1e999", b"-0", b'"', b"\\u0000", b"{", b"}", b"[", b"]", b",",
    b":", b'"\\ud800"', b"\xff", b"\xc3", b"true", b'"ext":{}', b'"id":"x"', b"9" * 30,
]  # fmt: skip
_VALUES = [
    None, -1, 0, 2, 3.5, -1e308, 1e308, 10**20, "", "x" * 300, "111.222.333.444", "usd",
    [], [None], {}, {"a": {"b": [1, {"c": None}]}}, True, False, "{not json", [0, -5, 999],
]  # fmt: skip


def _seeds() -> list[bytes]:
    paths = sorted((SHARED / "2.6" / "bid-request").glob("*.json"))
    bodies = [json.dumps(json.loads(p.read_text())).encode() for p in paths]
    for kind in ("valid", "repaired", "invalid"):
        for path in sorted((FIXTURES / kind).glob("*.json")):
            case = json.loads(path.read_text())
            if "request" in case:
                bodies.append(json.dumps(case["request"], separators=(",", ":")).encode())
            elif "request_body" in case:
                bodies.append(case["request_body"].encode())
    assert len(bodies) >= 150
    return bodies


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _json_mutation(body: bytes, rng: random.Random) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    paths = [p for p in _paths(document) if p]
    if not paths:
        return body
    path = rng.choice(paths)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    choice = rng.random()
    if choice < 0.6:
        parent[path[-1]] = rng.choice(_VALUES)
    elif choice < 0.8:
        del parent[path[-1]]
    elif isinstance(parent, dict):  # the same key again, with another value
        text = json.dumps(document)
        key = json.dumps(path[-1])
        return text.replace(
            f"{key}:", f"{key}: {json.dumps(rng.choice(_VALUES))}, {key}:", 1
        ).encode()
    return json.dumps(document).encode()


def _byte_mutation(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data = bytearray(b"{}")
        at = rng.randrange(len(data))
        kind = rng.randrange(6)
        if kind == 0:
            data[at] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = rng.choice(_TOKENS)
        elif kind == 2:
            del data[at : at + rng.randint(1, 16)]
        elif kind == 3:
            chunk = data[at : at + rng.randint(1, 64)]
            data[at:at] = chunk
        elif kind == 4:
            del data[at:]
        else:
            data[at : at + 1] = rng.choice(_TOKENS)
    return bytes(data)


def mutated_bodies(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    seeds = _seeds()
    bodies = []
    for _ in range(count):
        body = rng.choice(seeds)
        roll = rng.random()
        if roll < 0.45:
            body = _json_mutation(body, rng)
        elif roll < 0.9:
            body = _byte_mutation(body, rng)
        else:
            body = _byte_mutation(_json_mutation(body, rng), rng)
        bodies.append(body[:MAX_BODY])
    return bodies


def _request(body: bytes) -> bytes:
    return (
        f"POST /openrtb2/auction HTTP/1.1\r\nhost: x\r\nx-api-key: {API_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _drive(port: int, bodies: list[bytes], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for start_at in range(0, len(bodies), BATCH):
            batch = bodies[start_at : start_at + BATCH]
            writer.write(b"".join(_request(body) for body in batch))
            async with asyncio.timeout(BATCH_DEADLINE_S):
                for body in batch:
                    status = await _read_response(reader)
                    statuses[status] = statuses.get(status, 0) + 1
                    assert status in ALLOWED, (status, body[:300])
    finally:
        writer.close()


def test_twenty_thousand_mutated_requests_get_no_5xx_no_hang_no_crash(tmp_path):
    bodies = mutated_bodies(REQUESTS, SEED)

    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 1.5)])
        try:
            statuses: dict[int, int] = {}
            shares = [bodies[i::CONNECTIONS] for i in range(CONNECTIONS)]
            await asyncio.gather(*(_drive(h.platform.port, share, statuses) for share in shares))
            health, _, _ = await h.get(f"{h.base}/healthz")
            return statuses, health
        finally:
            await stop(h)

    statuses, health = asyncio.run(main())
    assert sum(statuses.values()) == REQUESTS
    assert health == 200
    # The mutations must reach the auction too, not only the decoder's refusals.
    assert statuses.get(200, 0) + statuses.get(204, 0) >= REQUESTS // 10, statuses
    assert statuses.get(400, 0) >= REQUESTS // 10, statuses


def test_the_mutations_are_seeded():
    assert mutated_bodies(50, SEED) == mutated_bodies(50, SEED)
    assert mutated_bodies(50, SEED) != mutated_bodies(50, SEED + 1)
