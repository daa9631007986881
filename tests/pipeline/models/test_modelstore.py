"""The model store: publication, atomic pointers, and fetches that refuse a damaged copy."""

from __future__ import annotations

import hashlib
import os
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.pipeline.modelstore import (
    MANIFEST_FILE,
    ArtifactDamaged,
    ModelStore,
    ModelStoreError,
    Pointer,
    prune_cache,
)


def _artifact(tmp_path, name="art", payload=b"weights" * 1000):
    directory = tmp_path / name
    (directory / "models" / "alpha").mkdir(parents=True)
    (directory / "shaping.json").write_text('{"version": "v"}')
    (directory / "models" / "alpha" / "weights.npy").write_bytes(payload)
    return directory


def _pointer(store: ModelStore, version: str, checksum: str, alias="production") -> Pointer:
    return Pointer(
        purpose="shaping",
        alias=alias,
        version=version,
        artifact=ModelStore.version_dir("shaping", version),
        checksum=checksum,
    )


def test_publish_then_fetch_gives_the_same_files_checked_against_the_manifest(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    checksum = store.publish("shaping", "1", _artifact(tmp_path))
    manifest = (tmp_path / "store" / "shaping" / "versions" / "1" / MANIFEST_FILE).read_bytes()
    assert checksum == hashlib.sha256(manifest).hexdigest()
    copy = store.fetch(_pointer(store, "1", checksum), tmp_path / "cache")
    assert (copy / "models" / "alpha" / "weights.npy").read_bytes() == b"weights" * 1000
    assert (copy / "shaping.json").read_text() == '{"version": "v"}'
    assert copy.parent == tmp_path / "cache" / "shaping"


def test_publishing_the_same_files_again_is_a_no_op_but_other_files_are_refused(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    first = store.publish("shaping", "1", _artifact(tmp_path))
    assert store.publish("shaping", "1", _artifact(tmp_path, "same")) == first
    with pytest.raises(ModelStoreError, match="never reused"):
        store.publish("shaping", "1", _artifact(tmp_path, "other", payload=b"different"))


def test_a_pointer_is_replaced_atomically_and_read_back(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    assert store.read_pointer("shaping", "production") is None
    for version in ("1", "2"):
        store.write_pointer(_pointer(store, version, "c" * 64))
    assert store.read_pointer("shaping", "production").version == "2"
    left = sorted(os.listdir(tmp_path / "store" / "shaping"))
    assert left == ["production.json"]  # no temp file left behind


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip", "checksum mismatch"),
        ("truncate", "truncated"),
        ("delete", "missing"),
        ("manifest", "differs from the pointer"),
    ],
)
def test_a_damaged_published_version_is_refused_and_nothing_is_cached(tmp_path, damage, message):
    store = ModelStore(str(tmp_path / "store"))
    checksum = store.publish("shaping", "1", _artifact(tmp_path))
    published = tmp_path / "store" / "shaping" / "versions" / "1"
    weights = published / "models" / "alpha" / "weights.npy"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[100] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "delete":
        weights.unlink()
    else:
        (published / MANIFEST_FILE).write_bytes(b'{"files": []}')
    with pytest.raises(ArtifactDamaged, match=message):
        store.fetch(_pointer(store, "1", checksum), tmp_path / "cache")
    assert list((tmp_path / "cache" / "shaping").iterdir()) == []


def test_a_damaged_cached_copy_is_fetched_again(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    pointer = _pointer(store, "1", store.publish("shaping", "1", _artifact(tmp_path)))
    copy = store.fetch(pointer, tmp_path / "cache")
    (copy / "shaping.json").write_text("damaged")
    again = store.fetch(pointer, tmp_path / "cache")
    assert again == copy and (again / "shaping.json").read_text() == '{"version": "v"}'


def test_a_pointer_naming_another_directory_is_refused(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    bad = msgspec.structs.replace(_pointer(store, "1", "c" * 64), artifact="../../etc")
    (tmp_path / "store" / "shaping").mkdir(parents=True)
    (tmp_path / "store" / "shaping" / "production.json").write_bytes(msgspec.json.encode(bad))
    with pytest.raises(ModelStoreError, match="field artifact"):
        store.read_pointer("shaping", "production")


def test_an_object_store_url_works_like_a_directory():
    """fsspec's in-memory filesystem stands for S3 and friends: the non-local code path."""
    url = f"memory://openbid-test-{uuid.uuid4().hex}"
    store = ModelStore(url)
    assert not store.local
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        checksum = store.publish("shaping", "7", _artifact(Path(tmp)))
        store.write_pointer(_pointer(store, "7", checksum))
        pointer = ModelStore(url).read_pointer("shaping", "production")
        copy = ModelStore(url).fetch(pointer, Path(tmp) / "cache")
        assert (copy / "models" / "alpha" / "weights.npy").read_bytes() == b"weights" * 1000


def test_pruning_the_cache_keeps_the_serving_copy_and_the_newest(tmp_path):
    cache = tmp_path / "cache" / "shaping"
    for i in range(6):
        (cache / f"v{i}").mkdir(parents=True)
        os.utime(cache / f"v{i}", (1000 + i, 1000 + i))
    prune_cache(tmp_path / "cache", "shaping", keep=cache / "v0", keep_last=2)
    assert sorted(p.name for p in cache.iterdir()) == ["v0", "v4", "v5"]


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_reading_any_pointer_file_gives_a_pointer_or_our_error(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("store")
    (root / "shaping").mkdir()
    (root / "shaping" / "production.json").write_bytes(raw)
    try:
        pointer = ModelStore(str(root)).read_pointer("shaping", "production")
    except ModelStoreError:
        return
    assert pointer.artifact == f"shaping/versions/{pointer.version}"


@pytest.mark.parametrize("name", ["", "..", "a/b", "x" * 200, "v 1"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ModelStoreError):
        ModelStore.version_dir("shaping", name)
