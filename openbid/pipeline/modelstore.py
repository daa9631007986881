"""The model store: where promotion publishes models for the servers, with one pointer per
(purpose, alias) saying which version serves. Servers read only this, never MLflow.

Layout under `models.store_url` (a local directory or any fsspec URL, e.g. `s3://bucket/m`):

| path | what |
| --- | --- |
| `<purpose>/versions/<version>/...` | the artifact's files, as registered |
| `<purpose>/versions/<version>/MANIFEST.json` | every file's size and SHA-256, written last |
| `<purpose>/<alias>.json` | the pointer: version, artifact, checksum (of the manifest), times |

The registry is the one writer. A pointer is replaced atomically (a local temp file renamed
over the old one; an object store publishes an object whole on upload), and only after the
version's files and manifest are in place. `fetch` copies a version into a local cache and
checks the manifest against the pointer's checksum and every file against the manifest, so
a torn or tampered copy (`ArtifactDamaged`) never reaches a loader.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import fsspec
import msgspec
from fsspec.implementations.local import LocalFileSystem

from openbid.errors import OpenbidError

log = logging.getLogger(__name__)

PURPOSES = ("shaping", "ctr", "cvr")
"""What a model is for: traffic shaping; click and conversion probability (pricing)."""
MANIFEST_FILE = "MANIFEST.json"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ModelStoreError(OpenbidError):
    """The store cannot be read or written, or one of its files is not what it should be."""


class ArtifactDamaged(ModelStoreError):
    """A published version does not match its manifest or its pointer (corrupt, truncated,
    tampered with): fetching it again will not help until it is published again."""


class ManifestEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    """Relative to the version's directory, `/`-separated."""
    bytes: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    files: list[ManifestEntry]


class Pointer(msgspec.Struct, frozen=True, kw_only=True):
    """Which version of a purpose serves under an alias. Unknown fields are ignored, so a
    newer registry can add some without breaking older servers."""

    purpose: str
    alias: str
    version: str
    """The registry's version number (a string, as MLflow gives it)."""
    artifact: str
    """The version's directory, relative to the store's root."""
    checksum: str
    """SHA-256 of the version's MANIFEST.json bytes."""
    model_version: str = ""
    """The artifact's own version name (a shaping model's `version`), when it has one."""
    promoted_at: str = ""
    """ISO-8601 UTC, on openbid's clock (a market clock in the demo)."""
    promoted_at_micros: int = 0
    trained_end_micros: int = 0
    """End of the training window (event time), 0 when unknown."""
    registry_name: str = ""


def check_name(kind: str, value: str) -> str:
    """`value` if it is a safe path segment (letters, digits, `_.-`), else ModelStoreError."""
    if not _NAME_RE.fullmatch(value) or value in (".", ".."):
        raise ModelStoreError(
            f"{kind} {value!r}: use letters, digits, '_', '.' or '-' (at most 128)"
        )
    return value


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(directory: str | Path) -> tuple[Manifest, bytes]:
    """The manifest of a local artifact directory and its encoded bytes (stable order)."""
    directory = Path(directory)
    entries = []
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = file.relative_to(directory).as_posix()
        if relative == MANIFEST_FILE:
            continue
        entries.append(ManifestEntry(relative, file.stat().st_size, _sha256_file(file)))
    if not entries:
        raise ModelStoreError(f"{directory}: no files to publish")
    manifest = Manifest(entries)
    return manifest, msgspec.json.format(msgspec.json.encode(manifest))


def checksum_of(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def _safe_relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """One model store (see the module doc); `url` is a directory or an fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or "."
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as exc:
            raise ModelStoreError(f"model store {self.url!r}: {exc}") from exc
        self.local = isinstance(self.fs, LocalFileSystem)

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @staticmethod
    def version_dir(purpose: str, version: str) -> str:
        return f"{check_name('purpose', purpose)}/versions/{check_name('version', version)}"

    @staticmethod
    def pointer_file(purpose: str, alias: str) -> str:
        return f"{check_name('purpose', purpose)}/{check_name('alias', alias)}.json"

    # --- the writer's side (the registry)
    def publish(self, purpose: str, version: str, directory: str | Path) -> str:
        """Copies a local artifact directory to `<purpose>/versions/<version>/`, the manifest
        last, and returns the checksum a pointer names. Publishing the same files again is a
        no-op; different files under a published version number are refused."""
        manifest, raw = manifest_of(directory)
        checksum = checksum_of(raw)
        relative = self.version_dir(purpose, version)
        manifest_path = self._path(f"{relative}/{MANIFEST_FILE}")
        try:
            existing = self.fs.cat_file(manifest_path)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot read {manifest_path}: {exc}") from exc
        if existing == raw:
            return checksum
        if existing is not None:
            raise ModelStoreError(
                f"{self.url}: {relative} is already published with other files; a version "
                "number is never reused"
            )
        try:
            for entry in manifest.files:
                target = self._path(f"{relative}/{entry.path}")
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(Path(directory) / entry.path), target)
            self._write_atomic(manifest_path, raw)
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot publish {relative}: {exc}") from exc
        log.info("model published", extra={"store": self.url, "artifact": relative})
        return checksum

    def published_checksum(self, purpose: str, version: str) -> str | None:
        """The checksum of a published version's manifest; None when it is not published."""
        path = self._path(f"{self.version_dir(purpose, version)}/{MANIFEST_FILE}")
        try:
            return checksum_of(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot read {path}: {exc}") from exc

    def remove_version(self, purpose: str, version: str) -> bool:
        """Deletes a published version (pruning); False when it was not there."""
        path = self._path(self.version_dir(purpose, version))
        try:
            if not self.fs.exists(path):
                return False
            self.fs.rm(path, recursive=True)
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot remove {path}: {exc}") from exc
        return True

    def write_pointer(self, pointer: Pointer) -> None:
        """Replaces the pointer of (purpose, alias) atomically."""
        path = self._path(self.pointer_file(pointer.purpose, pointer.alias))
        try:
            self._write_atomic(path, msgspec.json.format(msgspec.json.encode(pointer)))
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot write {path}: {exc}") from exc

    def _write_atomic(self, path: str, data: bytes) -> None:
        if not self.local:
            # An object store publishes an object whole when its upload completes.
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(
            directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(directory)

    # --- the servers' side
    def read_pointer(self, purpose: str, alias: str) -> Pointer | None:
        """The pointer of (purpose, alias); None when nothing was ever promoted there."""
        path = self._path(self.pointer_file(purpose, alias))
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot read {path}: {exc}") from exc
        try:
            pointer = msgspec.json.decode(raw, type=Pointer)
        except msgspec.DecodeError as exc:
            raise ModelStoreError(f"{path}: not a model pointer: {exc}") from exc
        if (pointer.purpose, pointer.alias) != (purpose, alias):
            raise ModelStoreError(
                f"{path}: field purpose/alias: says {pointer.purpose}@{pointer.alias}"
            )
        if pointer.artifact != self.version_dir(purpose, pointer.version):
            raise ModelStoreError(
                f"{path}: field artifact: {pointer.artifact!r} is not the directory of "
                f"version {pointer.version}"
            )
        return pointer

    def fetch(self, pointer: Pointer, cache_dir: str | Path) -> Path:
        """A checked local copy of the version `pointer` names, under `cache_dir` (reused
        when already there and intact). Raises `ArtifactDamaged` for a copy that does not
        match, `ModelStoreError` when the store cannot be read."""
        cache = Path(cache_dir) / check_name("purpose", pointer.purpose)
        target = cache / f"{check_name('version', pointer.version)}-{pointer.checksum[:16]}"
        if target.is_dir():
            try:
                verify_local(target, pointer.checksum)
                os.utime(target)  # recently used: the last one `prune_cache` removes
                return target
            except ArtifactDamaged as exc:  # damaged on this disk: fetch it again
                log.warning("cached model damaged; fetching it again", extra={"error": str(exc)})
                shutil.rmtree(target, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
        try:
            self._download(pointer, staging)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # not another process's copy of the same version
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _download(self, pointer: Pointer, staging: Path) -> None:
        remote = self._path(pointer.artifact)
        try:
            raw = self.fs.cat_file(f"{remote}/{MANIFEST_FILE}")
        except FileNotFoundError as exc:
            raise ArtifactDamaged(f"{remote}: no {MANIFEST_FILE} (not published)") from exc
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot read {remote}: {exc}") from exc
        if checksum_of(raw) != pointer.checksum:
            raise ArtifactDamaged(f"{remote}/{MANIFEST_FILE}: checksum differs from the pointer's")
        try:
            manifest = msgspec.json.decode(raw, type=Manifest)
        except msgspec.DecodeError as exc:
            raise ArtifactDamaged(f"{remote}/{MANIFEST_FILE}: {exc}") from exc
        for entry in manifest.files:
            if not _safe_relative(entry.path) or entry.path == MANIFEST_FILE:
                raise ArtifactDamaged(f"{remote}/{MANIFEST_FILE}: bad file name {entry.path!r}")
            local = staging / entry.path
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(f"{remote}/{entry.path}", str(local))
            except FileNotFoundError as exc:
                raise ArtifactDamaged(f"{remote}/{entry.path}: missing") from exc
            except OSError as exc:
                raise ModelStoreError(
                    f"{self.url}: cannot read {remote}/{entry.path}: {exc}"
                ) from exc
            _check_entry(local, entry, f"{remote}/{entry.path}")
        (staging / MANIFEST_FILE).write_bytes(raw)


def _check_entry(local: Path, entry: ManifestEntry, name: str) -> None:
    size = local.stat().st_size
    if size != entry.bytes:
        raise ArtifactDamaged(f"{name}: {size} bytes, the manifest says {entry.bytes} (truncated?)")
    if _sha256_file(local) != entry.sha256:
        raise ArtifactDamaged(f"{name}: checksum mismatch (corrupt or tampered with)")


def verify_local(directory: Path, checksum: str) -> None:
    """Checks a local copy against its manifest and the manifest against `checksum`."""
    try:
        raw = (directory / MANIFEST_FILE).read_bytes()
        manifest = msgspec.json.decode(raw, type=Manifest)
    except (OSError, msgspec.DecodeError) as exc:
        raise ArtifactDamaged(f"{directory}: unreadable {MANIFEST_FILE}: {exc}") from exc
    if checksum_of(raw) != checksum:
        raise ArtifactDamaged(f"{directory}/{MANIFEST_FILE}: checksum differs from the pointer's")
    for entry in manifest.files:
        if not _safe_relative(entry.path):
            raise ArtifactDamaged(f"{directory}/{MANIFEST_FILE}: bad file name {entry.path!r}")
        local = directory / entry.path
        if not local.is_file():
            raise ArtifactDamaged(f"{local}: missing")
        _check_entry(local, entry, str(local))


def prune_cache(cache_dir: str | Path, purpose: str, keep: Path | None, keep_last: int = 3) -> None:
    """Removes cached versions of `purpose` beyond the `keep_last` newest, never `keep` (the
    one serving). A server that memory-maps a removed file keeps reading it (POSIX)."""
    cache = Path(cache_dir) / purpose
    if not cache.is_dir():
        return
    entries = sorted(
        (p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in entries[keep_last:]:
        if keep is None or stale.resolve() != keep.resolve():
            shutil.rmtree(stale, ignore_errors=True)
