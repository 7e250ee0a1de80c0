"""The filesystem helpers every writer of the platform uses: a location to a pyarrow filesystem, and
atomic replacement of a local file (readers see the old version or the new one, never half of one).

A location is a local path or any URI pyarrow's filesystems take (`s3://bucket/prefix`, `gs://...`,
`file:///...`). Object stores replace an object atomically on write, so remote writes need no temporary.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    return "://" in str(location)


def filesystem_for(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it): a URI through pyarrow, a local path expanded and made absolute."""
    location = str(location)
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside the local file `final`: renamed onto it when the block succeeds, removed when
    it fails (and the previous version of `final`, if any, stays intact)."""
    final = Path(final)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temporary
        os.replace(temporary, final)  # atomic on POSIX
    except BaseException:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def atomic_write(final: str | os.PathLike, data: bytes | str) -> None:
    """Replace the local file `final` with `data` atomically."""
    with atomic_path(final) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)


def write_bytes(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    """Replace one file on any filesystem: atomically through a temporary locally, in one write remotely."""
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)  # pyarrow paths use "/" on every filesystem
    if isinstance(filesystem, pafs.LocalFileSystem):
        atomic_write(path, data)
        return
    with filesystem.open_output_stream(path) as out:
        out.write(data)


def read_bytes(filesystem: pafs.FileSystem, path: str) -> bytes | None:
    """A file's bytes, or None when there is no file at `path`."""
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as handle:
        return handle.read()
