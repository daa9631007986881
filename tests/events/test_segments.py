"""One suite for every segment store backend (Feast's pattern, like tests/stores/): a local
directory, and fsspec over `memory://`, `file://` and a real S3-compatible server (moto)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.events import EventLog, EventReader
from openbid.events.columns import to_batch
from openbid.events.segments import (
    FsspecSegmentStore,
    LocalSegmentStore,
    hour_label,
    hour_of_label,
    open_segment_store,
)

from .conftest import HOUR_MICROS, T0, bids, seqs

HOUR = T0 // HOUR_MICROS
BACKENDS = ["local", "fsspec-memory", "fsspec-file", "fsspec-s3"]


def _memory_url(tmp_path):
    return f"memory://openbid-test/{tmp_path.name}/events"


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "local":
        return LocalSegmentStore(str(tmp_path / "segments"))
    if request.param == "fsspec-memory":
        return FsspecSegmentStore(_memory_url(tmp_path))
    if request.param == "fsspec-file":
        return FsspecSegmentStore(f"file://{tmp_path}/segments")
    return FsspecSegmentStore(request.getfixturevalue("s3_endpoint")())


def _table(n, start=0, hour=HOUR):
    return pa.Table.from_batches([to_batch("bid", bids(n, start, ts=hour * HOUR_MICROS))])


def _prices(table):
    return table.column("price_micros").to_pylist()


def test_a_written_segment_is_listed_and_reads_back_whole(store):
    path = store.path("bid", HOUR, "writer-1-00000001")
    assert path.endswith(f"/bid/hour={hour_label(HOUR)}/writer-1-00000001.parquet")
    store.write(_table(5), path)
    assert store.list("bid") == [path]
    assert store.list("auction") == []
    assert _prices(store.read(path)) == [0, 1, 2, 3, 4]


def test_writing_a_segment_again_replaces_it(store):
    """A log file rolled again after a crash overwrites its segments: no duplicate events."""
    path = store.path("bid", HOUR, "writer-1-00000001")
    store.write(_table(5), path)
    store.write(_table(2, start=10), path)
    assert store.list("bid") == [path]
    assert _prices(store.read(path)) == [10, 11]


def test_segments_are_listed_in_hour_order_and_by_hour_range(store):
    paths = {}
    for hour in (HOUR + 2, HOUR, HOUR + 1):
        paths[hour] = store.path("bid", hour, "writer-1-00000001")
        store.write(_table(1, hour=hour), paths[hour])
    assert store.list("bid") == [paths[HOUR], paths[HOUR + 1], paths[HOUR + 2]]
    assert store.list("bid", start_hour=HOUR + 1) == [paths[HOUR + 1], paths[HOUR + 2]]
    assert store.list("bid", end_hour=HOUR + 2) == [paths[HOUR], paths[HOUR + 1]]
    assert store.list("bid", start_hour=HOUR + 1, end_hour=HOUR + 2) == [paths[HOUR + 1]]
    assert store.list("bid", start_hour=HOUR + 3) == []


def test_a_failed_write_publishes_nothing(store, monkeypatch):
    """Parquet encoding that fails half way (out of memory, a bug) leaves no segment behind
    for a reader to find, not even a truncated one."""
    path = store.path("bid", HOUR, "writer-1-00000001")
    real_write_table = pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        real_write_table(table.slice(0, 1), where, **kwargs)
        raise OSError("the encoder failed half way")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="half way"):
        store.write(_table(5), path)
    monkeypatch.undo()
    assert store.list("bid") == []
    assert not store.fs.exists(path)
    store.remove_temp_files("writer-1-00000001")
    assert [p for p in store.fs.find(store.root) if p.endswith(".parquet")] == []
    store.write(_table(5), path)  # the retry
    assert _prices(store.read(path)) == [0, 1, 2, 3, 4]


def test_files_being_written_are_never_listed(store):
    directory = store.path("bid", HOUR, "x").rsplit("/", 1)[0]
    store.fs.makedirs(directory, exist_ok=True)
    store.fs.pipe_file(f"{directory}/.tmp-writer-1-00000001-77-abcd.parquet", b"partial")
    assert store.list("bid") == []


def test_a_listing_sees_segments_another_process_wrote_since(store):
    """A roll process writes through its own filesystem object: the server's listing must
    not answer from a cache filled before (s3fs caches directory listings)."""
    first = store.path("bid", HOUR, "writer-1-00000001")
    store.write(_table(1), first)
    assert store.list("bid") == [first]
    other = type(store.fs)(skip_instance_cache=True)
    second = store.path("bid", HOUR, "writer-1-00000002")
    sink = pa.BufferOutputStream()
    pq.write_table(_table(1, start=1), sink)
    other.pipe_file(second, sink.getvalue().to_pybytes())
    assert store.list("bid") == [first, second]


def test_segment_urls_open_in_duckdb_with_the_stores_filesystem(store):
    """What the ETL does: DuckDB reads the URLs, the store's fsspec filesystem registered
    for the schemes DuckDB cannot open by itself."""
    import duckdb

    for hour in (HOUR, HOUR + 1):
        store.write(_table(3, start=10 * hour - 10 * HOUR, hour=hour), store.path("bid", hour, "w"))
    urls = store.urls("bid", start_hour=HOUR + 1)
    assert len(urls) == 1
    connection = duckdb.connect()
    connection.register_filesystem(store.fs)
    prices = connection.execute(
        "select price_micros from read_parquet(?, hive_partitioning = true) order by 1", [urls]
    ).fetchall()
    assert [p for (p,) in prices] == [10, 11, 12]


@pytest.mark.parametrize("backend", ["local", "file", "memory", "s3"])
def test_the_log_rolls_into_the_store_its_url_names_and_reads_back(backend, tmp_path, request):
    url = {
        "local": "",  # <dir>/segments
        "file": f"file://{tmp_path}/elsewhere",
        "memory": _memory_url(tmp_path),
        "s3": request.getfixturevalue("s3_endpoint")() if backend == "s3" else "",
    }[backend]
    expected = LocalSegmentStore if backend in ("local", "file") else FsspecSegmentStore
    with EventLog(tmp_path / "log", segments_url=url, flush_interval_s=0.05) as log:
        assert type(log.segments) is expected
        for event in bids(7):
            log.emit(event)
    assert not list((tmp_path / "log" / "wal").glob("*.log"))
    reader = EventReader(tmp_path / "log", segments_url=url)
    assert len(reader.segments.list("bid")) == 1
    assert sorted(seqs(tmp_path / "log", segments_url=url)) == list(range(7))


def test_open_segment_store_picks_the_backend_by_url(tmp_path):
    assert type(open_segment_store(str(tmp_path))) is LocalSegmentStore
    assert type(open_segment_store(f"file://{tmp_path}")) is LocalSegmentStore
    assert type(open_segment_store("memory://openbid-test/x")) is FsspecSegmentStore
    with pytest.raises(ValueError, match="not a local directory"):
        LocalSegmentStore("memory://openbid-test/x")


@given(st.integers(min_value=0, max_value=2_000_000))
def test_hour_labels_name_their_hour(hour):
    assert hour_of_label(hour_label(hour)) == hour


@pytest.mark.parametrize("label", ["", "2026-11-22", "2026-13-01T00", "latest", "2026-11-22T2x"])
def test_a_partition_label_that_names_no_hour_is_none(label):
    assert hour_of_label(label) is None
