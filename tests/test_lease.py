"""One writer at a time (`rft_ray.results.lease`): on a local folder (flock) and through an object store's protocol
(write, settle, read back, heartbeat), takers started truly at once, dead and stale holders, a holder that lost its
lease; and `rft attack`'s read-merge-replace of an attack results file under concurrent writers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from race import filesystem, merge_attack_rows, race, take_lease

from rft_ray.results.attacks import read_sidecar, sidecar_path
from rft_ray.results.lease import LEASE_DIR, SETTLE_S, Holder, Lease, LeaseError, LeaseHeld

KINDS = ["local", "object store"]


def lease(kind: str, folder: Path, messages: list | None = None, purpose: str = "test writer", **options) -> Lease:
    fs, path = filesystem(kind, str(folder))
    options = {"beat": 0.2, "settle": 0.3, **options}
    return Lease(fs, path, "run-x", purpose, "run x",
                 notify=messages.append if messages is not None else (lambda m: None), **options)


def test_takers_started_at_once_one_wins_and_the_others_name_it(tmp_path):
    """On a local folder the kernel's flock decides, whatever the scheduling. (The object-store protocol is exact
    only under its timing assumption, so processes racing on a loaded machine test it by luck: its interleavings
    are driven one by one below.)"""
    outcomes = race(tmp_path / "race", [(take_lease, ("local", str(tmp_path / "store"), 6.0, SETTLE_S))] * 3,
                    preload=["rft_ray.results.lease"])
    winners = [o for o in outcomes if o.code == 0]
    assert len(winners) == 1 and sorted(o.code for o in outcomes) == [0, 2, 2], outcomes
    for loser in (o for o in outcomes if o.code == 2):
        assert f"run x is being written by test writer (pid {winners[0].pid}," in loser.err, loser.err
    assert lease("local", tmp_path / "store").acquire().took_over is None  # given back: taken again


# ---------------------------------------------------------------------------------------------------
# The object-store protocol's race points, each interleaving forced (two takers, threads of this process). The
# lease module's clock is per thread and moves only by that thread's own sleeps and the pauses a test injects, so
# its timing checks see exactly the pauses meant here, however loaded the machine; the production settle (2 s)
# then costs no real time.


class ThreadClocks:
    """Stands for the `time` module in `rft_ray.results.lease`: monotonic() per thread; sleep() advances the
    calling thread's clock (and yields for a moment, so a writer can finish); everything else is real time."""

    def __init__(self):
        self.local = threading.local()

    def monotonic(self) -> float:
        return getattr(self.local, "now", 0.0)

    def sleep(self, seconds: float) -> None:
        self.local.now = self.monotonic() + seconds
        time.sleep(min(seconds, 0.02))

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clocks(monkeypatch) -> ThreadClocks:
    import rft_ray.results.lease as lease_module

    clocks = ThreadClocks()
    monkeypatch.setattr(lease_module, "time", clocks)
    return clocks


def _taker(folder: Path, name: str) -> Lease:
    return lease("object store", folder, purpose=name, settle=SETTLE_S, beat=0.2)


def _gate(taker: Lease, method: str, *gates: tuple) -> list:
    """Pause the taker at a race point: each gate (before, after[, when]) applies once, to the first call of
    `method` (`_read`, `_write_remote`) for which `when()` holds (no `when`: the first call it meets): the call
    waits for the event `before` to be set, runs, then sets `after`. Returns the list of calls made."""
    original, calls, pending = getattr(taker, method), [], [list(g) + [None] * (3 - len(g)) for g in gates]

    def gated(*args):
        calls.append(args)
        gate = next((g for g in pending if g[2] is None or g[2]()), None)
        if gate is not None:
            pending.remove(gate)
        before, after, _ = gate or (None, None, None)
        if before is not None:
            assert before.wait(20), f"{taker.purpose}: call {len(calls)} of {method} waited in vain"
        result = original(*args)
        if after is not None:
            after.set()
        return result

    setattr(taker, method, gated)
    return calls


def _acquire_in_thread(taker: Lease, outcome: dict) -> threading.Thread:
    """taker.acquire() in a thread; outcome[its purpose]: "holds" or the refusal; thread.done is set when over."""
    def take():
        try:
            taker.acquire()
            outcome[taker.purpose] = "holds"
        except LeaseHeld as err:
            outcome[taker.purpose] = str(err)
        finally:
            thread.done.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.done = threading.Event()
    thread.start()
    return thread


def test_object_store_both_read_it_free_then_the_last_write_wins_and_the_first_writer_names_it(tmp_path, clocks):
    a, b = _taker(tmp_path, "taker A"), _taker(tmp_path, "taker B")
    a_read, b_read, a_wrote, b_wrote = (threading.Event() for _ in range(4))
    _gate(a, "_read", (None, a_read), (b_wrote, None, a_wrote.is_set))  # A reads back only after B's write
    _gate(a, "_write_remote", (b_read, a_wrote))
    _gate(b, "_read", (a_read, b_read))
    _gate(b, "_write_remote", (a_wrote, b_wrote))
    outcome: dict = {}
    for thread in [_acquire_in_thread(a, outcome), _acquire_in_thread(b, outcome)]:
        thread.join(30)
    assert outcome["taker B"] == "holds", outcome
    assert "run x is being written by taker B (pid" in outcome["taker A"], outcome
    assert b._read().token == b.record.token  # _read waits out a file its heartbeat is rewriting
    b.release()


def test_object_store_a_taker_reading_after_anothers_write_is_refused_without_writing(tmp_path, clocks):
    a, b = _taker(tmp_path, "taker A"), _taker(tmp_path, "taker B")
    a_wrote = threading.Event()
    _gate(a, "_write_remote", (None, a_wrote))
    _gate(b, "_read", (a_wrote, None))
    b_writes = _gate(b, "_write_remote")
    outcome: dict = {}
    for thread in [_acquire_in_thread(a, outcome), _acquire_in_thread(b, outcome)]:
        thread.join(30)
    assert outcome["taker A"] == "holds" and "being written by taker A (pid" in outcome["taker B"], outcome
    assert b_writes == [] and a._read().token == a.record.token
    a.release()


def test_object_store_a_taker_paused_after_reading_it_free_reads_again_and_is_refused(tmp_path, clocks):
    """B reads the lease free, then is paused (1.5 s, more than settle / 2) while A takes it: B's read is too
    old to act on, so it reads again, finds A, and never writes."""
    a, b = _taker(tmp_path, "taker A"), _taker(tmp_path, "taker B")
    b_read, outcome = threading.Event(), {}
    _gate(a, "_read", (b_read, None))
    a_thread = _acquire_in_thread(a, outcome)
    first_read = b._read

    def read_then_pause():
        holder = first_read()
        if not b_read.is_set():
            b_read.set()
            assert a_thread.done.wait(20)  # A holds the lease meanwhile
            clocks.sleep(1.5)
        return holder

    b._read = read_then_pause
    b_writes = _gate(b, "_write_remote")
    with pytest.raises(LeaseHeld, match="being written by taker A"):
        b.acquire()
    assert outcome["taker A"] == "holds" and b_writes == [] and a._read().token == a.record.token
    a.release()


def test_object_store_a_write_landing_after_the_winners_read_back_is_caught_by_its_heartbeat(tmp_path, clocks):
    """The protocol's documented limit: B passes its check, then is paused inside its write until A holds the
    lease (its write lands more than settle after its read). Both return holding it; A's next heartbeat finds
    B's token and A's check() raises before its next write, so after one heartbeat only B writes."""
    a, b = _taker(tmp_path, "taker A"), _taker(tmp_path, "taker B")
    b_read, outcome = threading.Event(), {}
    _gate(a, "_read", (b_read, None))
    a_thread = _acquire_in_thread(a, outcome)
    _gate(b, "_read", (None, b_read))
    _gate(b, "_write_remote", (a_thread.done, None))
    b.acquire()  # B's record replaces A's after A read its own back
    assert outcome["taker A"] == "holds"
    deadline = time.monotonic() + 10
    with pytest.raises(LeaseError, match="lost the lease .* now held by taker B"):
        while time.monotonic() < deadline:
            a.check()
            time.sleep(0.05)
    b.check()  # B goes on
    a.release()  # never deletes B's record
    assert b._read().token == b.record.token
    b.release()


_HOLD_FOREVER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from race import filesystem
from rft_ray.results.lease import Lease
fs, path = filesystem(sys.argv[1], sys.argv[2])
Lease(fs, path, "run-x", "doomed writer", "run x", beat=0.2, settle=0.3).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_the_lease_of_a_killed_holder_is_taken_over_at_once_with_a_message(tmp_path, kind):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_FOREVER, kind, str(tmp_path / "store"),
                               str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld, match=f"doomed writer \\(pid {holder.pid},"):
        lease(kind, tmp_path / "store").acquire()  # alive: refused
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    messages = []
    taken = lease(kind, tmp_path / "store", messages).acquire()  # no waiting for a heartbeat to go stale
    assert taken.took_over is not None and taken.took_over.pid == holder.pid
    assert len(messages) == 1 and f"doomed writer (pid {holder.pid}," in messages[0]
    assert "whose process has ended" in messages[0]
    taken.release()


def _plant(folder: Path, heartbeat_age: float, machine: str = "elsewhere/boot") -> None:
    """An object-store lease of a process on another machine, whose last heartbeat was `heartbeat_age` s ago."""
    path = folder / "store" / LEASE_DIR / "run-x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path.write_bytes(Holder("rft run", "ana", "gpu-7", machine, 4242, "1", "t0", now - 999, now - heartbeat_age)
                     .to_json())


def test_an_object_store_lease_is_taken_over_only_when_its_heartbeat_is_stale(tmp_path):
    _plant(tmp_path, heartbeat_age=5)
    with pytest.raises(LeaseHeld) as info:
        lease("object store", tmp_path, stale_after=60).acquire()
    assert "rft run (pid 4242, user ana on host gpu-7" in str(info.value) and info.value.holder.token == "t0"
    _plant(tmp_path, heartbeat_age=61)
    messages = []
    taken = lease("object store", tmp_path, messages, stale_after=60).acquire()
    assert taken.took_over.pid == 4242 and "whose heartbeat stopped 61 s ago" in messages[0]
    taken.release()
    assert not (tmp_path / "store" / LEASE_DIR / "run-x.json").exists()


def test_an_object_store_holder_that_lost_its_lease_stops_before_writing(tmp_path):
    held = lease("object store", tmp_path).acquire()
    held.check()  # still ours
    _plant(tmp_path, heartbeat_age=0)  # a taker that found our heartbeats missing for too long
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            held.check()
        except LeaseError as err:
            assert "lost the lease" in str(err) and "rft run (pid 4242" in str(err)
            break
        time.sleep(0.05)
    else:
        pytest.fail("the heartbeat never noticed the lease was taken")
    held.release()  # never deletes the new holder's lease
    assert json.loads((tmp_path / "store" / LEASE_DIR / "run-x.json").read_text())["token"] == "t0"


@pytest.mark.parametrize("kind", KINDS)
def test_a_waiting_taker_gets_the_lease_when_it_is_given_back_and_heartbeats_refresh_it(tmp_path, kind):
    first = lease(kind, tmp_path).acquire()
    taken_at = first.record.heartbeat
    time.sleep(0.7)  # a few heartbeats
    assert _content(first)["heartbeat"] > taken_at
    threading.Timer(0.5, first.release).start()
    second = lease(kind, tmp_path).acquire(wait=20)
    assert second.took_over is None and _content(second)["token"] == second.record.token
    second.release()


def _content(held: Lease) -> dict:
    with held.fs.open_input_stream(held.path) as handle:
        return json.loads(handle.read())


def test_an_unwritable_lease_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LeaseError, match=f"cannot take the lease {blocker}/store/"):
        lease("local", blocker / "store").acquire()


def test_concurrent_attack_result_merges_lose_no_row(tmp_path):
    """Two writers of 150 rows each into one attack results file at once (the issue's reproduction kept 236)."""
    store = str(tmp_path / "store")
    Path(store).mkdir()
    outcomes = race(tmp_path / "race", [(merge_attack_rows, (store, "r1", list(range(0, 300, 2)), "aa_adv_acc/1/255")),
                                        (merge_attack_rows, (store, "r1", list(range(1, 300, 2)), "aa_adv_acc/2/255"))],
                    preload=["rft_ray.results.attacks", "rft_ray.results.store"])
    assert [o.code for o in outcomes] == [0, 0], outcomes
    table = read_sidecar(pafs.LocalFileSystem(), sidecar_path(str(tmp_path / "store"), "r1"))
    assert table.column("step").to_pylist() == list(range(300))
    rows = table.to_pylist()
    assert all(r["aa_adv_acc/1/255" if r["step"] % 2 == 0 else "aa_adv_acc/2/255"] == 0.5 for r in rows)
    assert sorted(os.listdir(tmp_path / "store" / "attacks")) == ["r1.parquet"]  # no temporary left
