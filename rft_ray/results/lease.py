"""One writer at a time: exclusive leases on a store's runs and on a sweep's folder, and short locks around the
read-merge-replace of a shared file.

A lease is a small JSON file, `<folder>/.rft-leases/<name>.json`, naming its holder: what holds it (`rft run`,
`rft sweep`, ...), user, host, process id and start time, a random token, when it was taken and its last
heartbeat. It is taken before anything is written and held until the command ends. How it is exclusive depends
on the storage (RELIABILITY.md says what each kind guarantees):

- A local folder (pyarrow's LocalFileSystem, NFS mounts whose server keeps locks included): the holder keeps an
  exclusive `flock` on the file while it holds the lease. The kernel judges: a second taker's non-blocking
  `flock` fails at once, and a process that ends, however it ends, loses its lock, so a lease file whose lock
  is free is provably abandoned and is taken over, with a message naming the dead holder.
- An object store (any other pyarrow filesystem: s3://, gs://): the stores are reached through pyarrow's
  filesystems, which offer no conditional create (pyarrow 25's S3FileSystem has no If-None-Match put: none of
  its options in `pyarrow/_s3fs.pyx`, nothing in `arrow/filesystem/s3fs.h`; GcsFileSystem likewise), so a
  taker reads the file; a lease whose heartbeat is younger than `stale_after` is held (refused, naming the
  holder) unless its holder ran on this very host (hostname and kernel boot id) and its process has ended;
  otherwise the taker writes its own record with a fresh token, waits `settle` seconds and reads the file back.
  Its own token there makes the lease its own; of two takers that both read the lease free, the one whose write
  landed first reads the other's token and is refused. This is exclusive under one assumption: every taker's
  write lands within `settle` of its read (a write landing later can replace a winner's record after the
  winner read its own back). The taker enforces half of it: a read older than `settle / 2` when it is about to
  write is read again, so a taker paused between its read and its write cannot go on; what it cannot enforce
  is a pause longer than `settle / 2` after that check, inside the write. If that happens, two takers return
  holding the lease, and the earlier one's next heartbeat (within `beat`) finds the other's token, marks the
  lease lost, and its `check()` (called before each write) raises. The holder's heartbeat rewrites the file
  every `beat` seconds after checking that the token there is still its own. tests/test_lease.py drives each of
  these interleavings deterministically (pauses injected at the read and the write).
"""
from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import pyarrow.fs as pafs

from rft_ray.results.files import filesystem_for

LEASE_DIR = ".rft-leases"
BEAT_S = 10.0  # heartbeat period
STALE_S = 120.0  # an object-store lease whose heartbeat is this old is abandoned (12 missed beats)
SETTLE_S = 2.0  # object stores: the wait between writing a lease and reading it back


class LeaseError(ValueError):
    """A lease that cannot be taken or was lost; the message names the lease file and its holder."""


class LeaseHeld(LeaseError):
    """Another writer holds the lease."""

    def __init__(self, message: str, holder: "Holder | None"):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease: the lease file's content."""

    purpose: str
    user: str
    host: str
    machine: str  # hostname and kernel boot id: "this very host" for the process check
    pid: int
    pid_started: str  # the process's start time in clock ticks since boot (/proc): a reused pid is another process
    token: str
    taken: float
    heartbeat: float

    def describe(self, now: float | None = None) -> str:
        ago = max(0.0, (now or time.time()) - self.heartbeat)
        return (f"{self.purpose} (pid {self.pid}, user {self.user} on host {self.host}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.taken))}, last heartbeat {ago:.0f} s ago)")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Holder | None":
        try:
            fields = json.loads(data.decode())
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # empty or half written (a holder rewriting it), or not a lease file


def _process_started(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    except (OSError, IndexError):
        return ""


def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container without a passwd entry
        return f"uid {os.getuid()}"


def ended_here(holder: Holder) -> bool:
    """The holder ran on this host and its process has ended (or its pid now belongs to another process)."""
    if holder.machine != _machine():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(holder.pid_started) and _process_started(holder.pid) not in ("", holder.pid_started)


class Lease:
    """The lease `name` in `folder` (a path on `filesystem`) on `subject` (what it guards, in messages), for
    `purpose` (what the holder is). `acquire` takes it or raises LeaseHeld; `release` gives it back; `with
    lease:` does both."""

    def __init__(self, filesystem: pafs.FileSystem, folder: str, name: str, purpose: str, subject: str = "", *,
                 beat: float = BEAT_S, stale_after: float = STALE_S, settle: float = SETTLE_S,
                 notify: Callable[[str], None] | None = None):
        self.fs, self.folder, self.name, self.purpose = filesystem, folder.rstrip("/"), name, purpose
        self.subject = subject or name
        self.path = f"{self.folder}/{LEASE_DIR}/{name}.json"
        self.local = isinstance(filesystem, pafs.LocalFileSystem)
        self.beat, self.stale_after, self.settle = beat, stale_after, settle
        self.notify = notify or (lambda message: print(f"rft: {message}", file=sys.stderr, flush=True))
        self.record: Holder | None = None
        self.took_over: Holder | None = None  # the abandoned lease this one replaced
        self._fd: int | None = None
        self._made: list[str] = []
        self._lost: Holder | None = None
        self._lost_flag = False
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    # -- taking and giving back

    def acquire(self, wait: float = 0.0) -> "Lease":
        """Take the lease, waiting up to `wait` seconds for a holder to give it back; LeaseHeld after that."""
        deadline = time.monotonic() + wait
        self.record = Holder(self.purpose, _user(), socket.gethostname(), _machine(), os.getpid(),
                             _process_started(os.getpid()), uuid.uuid4().hex, time.time(), time.time())
        try:
            self._made = self._missing_folders()
            self.fs.create_dir(f"{self.folder}/{LEASE_DIR}", recursive=True)
            previous = self._acquire_local(deadline) if self.local else self._acquire_remote(deadline)
        except OSError as err:
            raise LeaseError(f"cannot take the lease {self.path} ({err}): is {self.folder} a writable folder?") from err
        if previous is not None and previous.token != self.record.token:
            self.took_over = previous
            why = "whose process has ended" if self.local or ended_here(previous) else \
                f"whose heartbeat stopped {time.time() - previous.heartbeat:.0f} s ago"
            self.notify(f"took over the lease {self.path} of {previous.describe()}, {why}")
        self._stop.clear()
        self._beater = threading.Thread(target=self._beat, name=f"rft-lease-{self.name}", daemon=True)
        self._beater.start()
        return self

    def release(self) -> None:
        """Give the lease back (its file is removed); nothing when it is not held."""
        self._stop.set()
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join(timeout=self.beat + 5)
        self._beater = None
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while locked: a taker that opened this file sees it gone and opens anew
            except OSError:
                pass
            os.close(self._fd)  # releases the flock
            self._fd = None
            for folder in [f"{self.folder}/{LEASE_DIR}", *self._made]:  # the last lease leaves no folder it made
                try:
                    os.rmdir(folder)
                except OSError:
                    break  # another lease is there, or something else was written meanwhile
        elif self.record is not None and not self.local and not self._lost_flag:
            try:
                current = self._read()
                if current is not None and current.token == self.record.token:
                    self.fs.delete_file(self.path)
            except OSError:
                pass  # an object left behind is stale once its heartbeat is
        self.record = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def check(self) -> None:
        """LeaseError when another writer took the lease over (object stores: after heartbeats went missing)."""
        if self._lost_flag:
            who = self._lost.describe() if self._lost is not None else "nobody (its file is gone)"
            raise LeaseError(f"lost the lease {self.path}: it is now held by {who}; stopping before writing (this "
                             "process's heartbeat could not reach the store for too long)")

    def _missing_folders(self) -> list[str]:
        """The local folders, deepest first, that taking the lease makes (`folder` and those above it)."""
        if not self.local:
            return []
        missing, folder = [], self.folder
        while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            missing.append(folder)
            folder = os.path.dirname(folder)
        return missing

    # -- local folders: flock

    def _acquire_local(self, deadline: float) -> Holder | None:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the folder went with the last lease given back: make it again
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise self._held(self._read()) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as it gave the lease back: take the new one
                os.close(fd)
                continue
            previous = Holder.from_json(os.pread(fd, 1 << 16, 0))
            self._fd = fd
            self._write_local()
            return previous

    def _write_local(self) -> None:
        data = self.record.to_json()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    # -- object stores: write, settle, read back

    def _acquire_remote(self, deadline: float) -> Holder | None:
        while True:
            read_at = time.monotonic()
            current = self._read()
            free = current is None or ended_here(current) or time.time() - current.heartbeat > self.stale_after
            if not free:
                if time.monotonic() < deadline:
                    time.sleep(min(1.0, self.settle))
                    continue
                raise self._held(current)
            if time.monotonic() - read_at > self.settle / 2:
                continue  # too long since that read: another taker may have written since
            self._write_remote()
            time.sleep(self.settle)
            back = self._read()
            if back is not None and back.token == self.record.token:
                return current
            if time.monotonic() >= deadline:
                raise self._held(back)

    def _write_remote(self) -> None:
        with self.fs.open_output_stream(self.path) as out:
            out.write(self.record.to_json())

    def _read(self) -> Holder | None:
        """The lease file's holder; None when there is no file, or it stays unparseable over 20 reads (a file a
        writer is rewriting is empty or partial for a moment where writes are not atomic: a local holder's
        heartbeat, or a local disk seen through an object-store protocol; object stores' own puts are atomic)."""
        pause = 0.01 if self.local else 0.05
        for _ in range(20):
            try:
                with self.fs.open_input_stream(self.path) as handle:
                    holder = Holder.from_json(handle.read())
            except OSError as err:
                if not self.local:
                    if isinstance(err, FileNotFoundError):
                        return None
                    raise
                holder = None  # locally only read for the refusal message: a holder replacing its file, read again
            if holder is not None:
                return holder
            time.sleep(pause)
        return None

    def _held(self, holder: Holder | None) -> LeaseHeld:
        who = holder.describe() if holder is not None else "another process (its lease file is unreadable)"
        if self.local and holder is not None and ended_here(holder):
            who += " whose process has ended, but a process it started still holds the lock"
        return LeaseHeld(f"{self.subject} is being written by {who} (lease {self.path}); wait for it to finish "
                         "or stop it (the lease of a process that has ended is taken over without asking)", holder)

    # -- the heartbeat

    def _beat(self) -> None:
        while not self._stop.wait(self.beat):
            try:
                if not self.local:
                    current = self._read()
                    if current is None or current.token != self.record.token:
                        self._lost, self._lost_flag = current, True
                        return
                self.record = Holder(**{**asdict(self.record), "heartbeat": time.time()})
                self._write_local() if self.local else self._write_remote()
            except (OSError, AttributeError, TypeError):
                continue  # a missed beat (the store unreachable, or released meanwhile): the next one tries again


def lease_in(location: str, name: str, purpose: str, subject: str = "", **options) -> Lease:
    """The lease `name` in the folder or URI `location` (a result store, a sweep folder)."""
    filesystem, path = filesystem_for(location)
    return Lease(filesystem, path, name, purpose, subject, **options)


@contextmanager
def holding(leases: list[Lease]) -> Iterator[list[Lease]]:
    """All of `leases` held for the block, or none (LeaseHeld for the first one held elsewhere)."""
    with ExitStack() as stack:
        for lease in leases:
            lease.acquire()
            stack.callback(lease.release)
        yield leases
