"""Fetches the console's browser libraries from the npm registry at build time (`make vendor`):
each package of `openbid/console/web/vendor.lock` is fetched with `npm pack` at its pinned
version, its tarball checked against the recorded sha512 integrity, and the one file the
pages load copied to `openbid/console/web/static/vendor/` with the package's licence beside
it. Nothing is fetched at run time, and the pages never load a script from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "openbid" / "console" / "web"
LOCK = WEB / "vendor.lock"
TARGET = WEB / "static" / "vendor"
LICENCE_NAMES = ("package/LICENSE", "package/LICENSE.md", "package/LICENSE.txt")


def entries() -> list[list[str]]:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(spec: str, expected: str, member: str, served_as: str, work: Path) -> None:
    done = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = work / done.stdout.strip().splitlines()[-1]
    found = integrity(tarball)
    if found != expected:
        sys.exit(f"{spec}: integrity {found} is not the locked {expected}")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        (TARGET / served_as).write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
        licence = next((n for n in LICENCE_NAMES if n in names), None)
        if licence is None:
            sys.exit(f"{spec}: no licence file in the package")
        text = archive.extractfile(licence).read()  # type: ignore[union-attr]
        (TARGET / f"{served_as}.LICENSE.txt").write_bytes(text)


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    versions = []
    with tempfile.TemporaryDirectory() as work:
        for spec, expected, member, served_as, licence in entries():
            fetch(spec, expected, member, served_as, Path(work))
            versions.append(f"{served_as}\t{spec}\t{licence}\t{expected}")
    (TARGET / "VERSIONS.txt").write_text("\n".join(versions) + "\n", encoding="utf-8")
    print(f"vendored {len(versions)} packages into {TARGET}")


if __name__ == "__main__":
    main()
