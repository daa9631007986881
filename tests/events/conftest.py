"""Helpers of the event log tests: numbered events, polling with a deadline, reading back."""

from __future__ import annotations

import itertools
import logging
import os
import time

import fsspec
import pytest

from openbid.events import BidEvent, EventReader
from openbid.events.columns import record_batch
from openbid.events.framing import encode_record

HOUR_MICROS = 3_600_000_000
T0 = 1_795_000_000 * 1_000_000  # an hour boundary in 2026


def bids(n, start=0, ts=T0):
    """`n` bid events numbered from `start` (in `price_micros` and the auction id)."""
    return [BidEvent(ts + i, f"a{start + i}", "dsp-a", price_micros=start + i) for i in range(n)]


def seqs(directory, **reader_options):
    """The numbers of the bid events the log in `directory` holds, rolled or not."""
    table = EventReader(directory, **reader_options).read_table("bid")
    return table.column("price_micros").to_pylist()


def poll(condition, what, timeout_s=10.0):
    """Waits for `condition()` to hold; fails with `what` past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def rows(records):
    """The number of events in each record."""
    return [record_batch(record).num_rows for record in records]


def write_dead_logs(directory, files, rows_per_file):
    """Log files of writers that died before rolling: `files` of them, numbered events."""
    wal = directory / "wal"
    wal.mkdir(parents=True)
    for i in range(files):
        events = bids(rows_per_file, start=i * rows_per_file)
        (wal / f"dead-{i:03d}-abcdef-00000001.log").write_bytes(encode_record("bid", events))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server on loopback (moto's server mode, from PyPI: no download at
    run time), reached through s3fs in this process and in roll processes alike (the AWS_*
    variables they inherit). Yields a function that makes a new empty bucket's URL."""
    from moto.server import ThreadedMotoServer  # only for the tests that use it: heavy

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "openbid-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "openbid-test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        buckets = itertools.count()

        def new_bucket_url() -> str:
            url = f"s3://openbid-test-{os.getpid()}-{next(buckets)}/events"
            fs, root = fsspec.core.url_to_fs(url)
            fs.mkdir(root.split("/")[0])
            return url

        yield new_bucket_url
    server.stop()
