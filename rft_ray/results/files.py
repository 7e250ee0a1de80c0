"""The filesystem helpers every writer of the platform uses: a location to a pyarrow filesystem, atomic
replacement of a local file (readers see the old version or the new one, never half of one), and destinations
checked before the work that will write to them.

A location is a local path or any URI pyarrow's filesystems take (`s3://bucket/prefix`, `gs://...`,
`file:///...`). Object stores replace an object atomically on write, so remote writes need no temporary.
A write that fails (a full disk, a lost permission, the network) raises `WriteError`: one line naming the file,
with the previous version intact.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs


class DestinationError(ValueError):
    """A destination that cannot take what a command will write (a file where a folder must be, no write
    access); the message names it and says what is wrong."""


class WriteError(DestinationError, OSError):
    """Writing a file failed part-way (disk full, no permission, network); its previous version is intact."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def write_failed(err: OSError, path: str | os.PathLike) -> WriteError:
    """`err`, raised while replacing `path`, as a WriteError naming the file."""
    if isinstance(err, WriteError):
        return err
    reason = err.strerror or str(err) or type(err).__name__
    return WriteError(f"cannot write {path} ({reason}); its previous version, if any, is intact", err.errno)


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
    except BaseException as err:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise write_failed(err, final) from err
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
    try:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)  # pyarrow paths use "/" on every filesystem
        if isinstance(filesystem, pafs.LocalFileSystem):
            atomic_write(path, data)
            return
        with filesystem.open_output_stream(path) as out:  # an object is replaced whole, or not at all
            out.write(data)
    except OSError as err:
        raise write_failed(err, path) from err


def read_bytes(filesystem: pafs.FileSystem, path: str) -> bytes | None:
    """A file's bytes, or None when there is no file at `path`."""
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as handle:
        return handle.read()


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why the local folder `path` cannot be written, or None: a file stands where a folder must, or the folder
    (while it does not exist, the nearest folder above it, where it will be made) does not take a file. Makes
    nothing (the probe file is removed)."""
    path = Path(path).expanduser().absolute()
    existing = next(part for part in [path, *path.parents] if part.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    probe = existing / f".probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        return f"{existing} is not writable ({err.strerror or err})"
    return None


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """The local folder `path`, checked by `folder_problem` (`what`: the setting or option naming it)."""
    problem = folder_problem(path)
    if problem:
        raise DestinationError(f"{what}: {problem}")
    return Path(path).expanduser().absolute()


def check_file_destination(path: str | os.PathLike, what: str) -> Path:
    """The local file `path` will be written: not a folder, in a folder that can be written."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise DestinationError(f"{what}: {path} is a folder, not a file")
    check_folder(path.parent, what)
    return path
