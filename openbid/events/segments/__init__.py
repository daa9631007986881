"""Segment storage: one interface (`SegmentStore`), a backend per module (Feast's pattern).

`open_segment_store(url)` picks the backend: `LocalSegmentStore` for a path or a `file://`
URL (temp name, fsync, rename), `FsspecSegmentStore` for any other fsspec URL.
"""

from __future__ import annotations

import os

import fsspec

from openbid.events.segments.base import (
    SegmentStore,
    hour_label,
    hour_of_label,
    is_local,
    segment_stem,
)
from openbid.events.segments.fsspec_store import FsspecSegmentStore
from openbid.events.segments.local import LocalSegmentStore


def open_segment_store(url: str) -> SegmentStore:
    """The store at `url`: a local directory (a path, `file://`) or any fsspec URL."""
    fs, _ = fsspec.core.url_to_fs(url.rstrip("/"))
    return LocalSegmentStore(url) if is_local(fs) else FsspecSegmentStore(url)


def segments_url_for(directory: str | os.PathLike[str], url: str = "") -> str:
    """The segment store of the event log in `directory`: `url`, or `<directory>/segments`."""
    return url or os.path.join(directory, "segments")


__all__ = [
    "FsspecSegmentStore",
    "LocalSegmentStore",
    "SegmentStore",
    "hour_label",
    "hour_of_label",
    "open_segment_store",
    "segment_stem",
    "segments_url_for",
]
