"""File helpers shared by the steps."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _process_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


# What open() would give a new file. mkstemp makes it 0600, readable by its owner only: a package written
# that way cannot be read by a server running as another user (the serve image's, or a pod's).
NEW_FILE_MODE = 0o666 & ~_process_umask()  # read once, at import, before any thread starts


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that takes `path`'s name only once it is completely written; readers never see a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, mode) as out:
            yield out
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_write(path, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")


def folder_sha256(folder: Path, ignore: Collection[str] = ()) -> str:
    """Content digest of a folder: every file's relative path and bytes, in sorted order (except the
    relative paths in `ignore`). Equal digests mean byte-identical trees, whatever the file times or the
    folder's location."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder).as_posix()
        if relative in ignore:
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as data:
            file_digest = hashlib.sha256()
            for block in iter(lambda: data.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    return digest.hexdigest()
