"""Segments and training sets on fsspec URLs (memory://, file://) as on a local directory,
and `openbid etl build` end to end."""

from __future__ import annotations

import json
import secrets

import fsspec
from click.testing import CliRunner

from openbid.cli import main
from openbid.pipeline import (
    DuckDBEngine,
    EventSource,
    Windows,
    build_training_set,
    latest_training_set,
    read_training_set,
    run,
)
from openbid.pipeline.synthetic import synthetic_tables, write_segments

from .conftest import T0_MICROS as T0
from .conftest import S

WINDOWS = Windows(click_window_s=600, late_wait_s=60, lookback_s=3600)
NOW = T0 + 6 * 3600 * S


def test_a_segment_store_and_training_sets_in_object_storage_work_like_directories(tmp_path):
    bucket = f"memory://openbid-{secrets.token_hex(4)}"
    tables = synthetic_tables(500, seed=5, start_micros=T0, span_s=3600.0)
    write_segments(tables, f"{bucket}/events")
    write_segments(tables, str(tmp_path / "segments"))
    remote = EventSource(tmp_path / "empty", segments_url=f"{bucket}/events")
    local = EventSource(tmp_path)
    engine = DuckDBEngine()
    manifest = build_training_set(
        "click", remote, engine, WINDOWS, f"{bucket}/sets", since_micros=T0, now_micros=NOW
    )
    expected = run("click", local, engine, WINDOWS, since_micros=T0, now_micros=NOW)
    assert manifest.path.startswith(f"{bucket}/sets/click/")
    tables_back, manifest_back = read_training_set(manifest.path)
    assert tables_back["rows"].equals(expected.rows)
    assert manifest_back["rows"] == expected.rows.num_rows > 0
    assert manifest_back["positives"] == expected.manifest.positives > 0
    assert manifest_back["source"]["segments"]["impression"]
    assert all(
        p.endswith("synthetic.parquet") for p in manifest_back["source"]["segments"]["click"]
    )
    assert latest_training_set(f"{bucket}/sets", "click") == manifest.path
    fs, _ = fsspec.core.url_to_fs(bucket)
    fs.rm(bucket.removeprefix("memory://"), recursive=True)


def test_file_urls_work_and_the_latest_set_is_the_one_whose_window_closes_last(tmp_path):
    write_segments(synthetic_tables(300, seed=2, start_micros=T0), str(tmp_path / "segments"))
    out = f"file://{tmp_path}/sets"
    source, engine = EventSource(tmp_path), DuckDBEngine()
    first = build_training_set("click", source, engine, WINDOWS, out, now_micros=NOW - 3600 * S)
    second = build_training_set("click", source, engine, WINDOWS, out, now_micros=NOW)
    assert first.path != second.path
    assert latest_training_set(out, "click") == second.path
    assert second.rows >= first.rows > 0
    manifest = json.loads(
        (tmp_path / "sets" / second.path.split("/sets/")[1] / "manifest.json").read_text()
    )
    assert manifest["window"]["closed_until_micros"] == NOW - 660 * S
    assert manifest["windows"]["click_window_s"] == 600
    assert manifest["engine"] == "duckdb" and manifest["files"] == {"rows": "rows.parquet"}


def test_openbid_etl_build_writes_a_set_and_says_where(tmp_path):
    # a day in the past: the command reads the real clock
    start = 1_768_464_000 * S  # 2026-01-15T08:00Z
    write_segments(synthetic_tables(300, seed=4, start_micros=start), str(tmp_path / "segments"))
    result = CliRunner().invoke(
        main,
        [
            "etl", "build", "shaping",
            "--events-dir", str(tmp_path),
            "--out", str(tmp_path / "sets"),
            "--since", "2026-01-15T08:00",
            "--until", "2026-01-15T20:00:00+00:00",
            "--engine", "duckdb",
            "--no-progress",
        ],
        env={"OPENBID_ETL__LATE_WAIT_S": "0"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "shaping: 2,400 rows" in result.output
    directory = tmp_path / "sets" / "shaping" / "20260115T080000Z_20260115T200000Z"
    assert (directory / "manifest.json").exists() and (directory / "auctions.parquet").exists()


def test_openbid_etl_build_names_a_bad_time(tmp_path):
    result = CliRunner().invoke(
        main, ["etl", "build", "click", "--events-dir", str(tmp_path), "--since", "yesterday"]
    )
    assert result.exit_code == 2
    assert "--since" in result.output and "not an ISO 8601 time" in result.output
