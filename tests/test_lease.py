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


def lease(kind: str, folder: Path, messages: list | None = None, **options) -> Lease:
    fs, path = filesystem(kind, str(folder))
    options = {"beat": 0.2, "settle": 0.3, **options}
    return Lease(fs, path, "run-x", "test writer", "run x",
                 notify=messages.append if messages is not None else (lambda m: None), **options)


@pytest.mark.parametrize("kind", KINDS)
def test_takers_started_at_once_one_wins_and_the_others_name_it(tmp_path, kind):
    # The production settle (2 s): the object-store protocol assumes a taker is not paused longer than half of it
    # between its read and its write, which a 0.3 s settle on a loaded 2-core machine did not always give.
    outcomes = race(tmp_path / "race", [(take_lease, (kind, str(tmp_path / "store"), 6.0, SETTLE_S))] * 3,
                    preload=["rft_ray.results.lease"])
    winners = [o for o in outcomes if o.code == 0]
    assert len(winners) == 1 and sorted(o.code for o in outcomes) == [0, 2, 2], outcomes
    for loser in (o for o in outcomes if o.code == 2):
        assert f"run x is being written by test writer (pid {winners[0].pid}," in loser.err, loser.err
    assert lease(kind, tmp_path / "store").acquire().took_over is None  # given back: taken again, nothing to take over


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
