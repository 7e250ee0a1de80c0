"""Nothing lost, ever (issue 31): one writer per run id and per sweep folder (writers started truly at once), no
deletion the user did not ask for (`rft run --restart`), every destination checked before the work, a full disk
and a corrupt checkpoint as one clear line, `rft checkpoints` naming bad files, interrupt messages that say what a
rerun does. Faults come in through loop plugins (`tests/fault_plugins.py`) and wrapped writers."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import cli_error, tiny_run
from race import race, rft

import fault_plugins
from rft_ray.cli import main
from rft_ray.results.attacks import read_sidecar, record_attack_results, sidecar_path
from rft_ray.results.checkpoints import front_steps
from rft_ray.results.lease import LEASE_DIR
from rft_ray.results.store import ResultStore
from rft_ray.specs import run_spec

RUN = "r1"
STEPS = [0, 20, 40, 60]


def spec_data(root: Path, **overrides) -> dict:
    return tiny_run(root, **{"output.run_id": RUN, "output.keep_checkpoints": "all", "evaluation.pgd.examples": 12,
                             **overrides})


def write_spec(root: Path, name: str = "run.yaml", **overrides) -> str:
    path = root / name
    path.write_text(yaml.safe_dump(spec_data(root, **overrides)))
    return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder holding a finished run r1 (steps 0, 20, 40, 60, every point's weights kept) in store/ with its
    checkpoint in ckpt/, `rft attack` results of every point and one `rft interpolate` file."""
    from rft_ray.training.runner import run_in_process

    root = tmp_path_factory.mktemp("finished")
    result = run_in_process(run_spec(spec_data(root)), progress=False)
    store = result.store
    record_attack_results(store.fs, store.path, RUN, [{"run_id": RUN, "step": s, "aa_adv_acc/4/255": 0.25}
                                                      for s in STEPS])
    from rft_ray.training.interpolate import WISE_HEAD_KEY

    ResultStore(root / "store" / "interpolated").write_run(f"{RUN}.wise-step60", [dataclasses.replace(
        result.records[-1], run_id=f"{RUN}.wise-step60", wise_alpha=1.0, source_run_id=RUN)],
        metadata={WISE_HEAD_KEY: "fine_tuned"})  # as `rft interpolate` (default head mode) writes it
    return root


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    """A copy of `finished` (store/, ckpt/) this test may change, with its run spec in run.yaml."""
    shutil.copytree(finished / "store", tmp_path / "store")
    shutil.copytree(finished / "ckpt", tmp_path / "ckpt")
    write_spec(tmp_path)
    return tmp_path


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and LEASE_DIR not in p.parts}


def arm_interrupt(monkeypatch, folder: Path, plan: dict) -> None:
    """Ctrl-C inside the next run (`fault_plugins.Interrupt`), loaded as any user's plugin would be."""
    folder.mkdir(exist_ok=True)
    (folder / fault_plugins.INTERRUPT_FILE).write_text(json.dumps(plan))
    monkeypatch.setenv(fault_plugins.FAULT_DIR_ENV, str(folder))
    monkeypatch.setenv("RFT_PLUGINS", f"{fault_plugins.__file__}:Interrupt")


# ---------------------------------------------------------------------------------------------------
# No silent deletion


def test_a_run_without_its_checkpoint_is_refused_and_restart_deletes_only_after_its_first_new_point(
        copy, capsys, monkeypatch):
    """The issue's reproduction: a finished run (4 rows, weights of every point, attack results, an interpolated
    file) run again with --checkpoints pointing at an empty folder used to be wiped before training."""
    spec, elsewhere, before = str(copy / "run.yaml"), copy / "elsewhere", digests(copy / "store")
    assert main(["run", "--spec", spec, "--quiet", "--checkpoints", str(elsewhere)]) == 2
    message = cli_error(capsys.readouterr().err)
    for said in (f"run r1 already has results in result store {copy / 'store'}", "4 rows (steps 0 to 60)",
                 "checkpoints/r1/step-{0,20,40,60}.safetensors", "attacks/r1.parquet",
                 "interpolated/r1.wise-step60.parquet", f"no checkpoint to resume from in {elsewhere / RUN}",
                 f"--checkpoints at the folder that holds {RUN}/checkpoint.pt", "--restart"):
        assert said in message, said
    assert digests(copy / "store") == before

    # --restart, interrupted before its first point: it said what it would delete, and deleted nothing
    arm_interrupt(monkeypatch, copy / "faults", {"at": "start"})
    assert main(["run", "--spec", spec, "--quiet", "--checkpoints", str(elsewhere), "--restart"]) == 130
    out = capsys.readouterr().out
    assert "rft run --restart: run r1 starts again from step 0; once its first point is written, this deletes" in out
    for path in ("r1.parquet (4 rows: replaced)", "checkpoints/r1/step-60.safetensors", "attacks/r1.parquet",
                 "interpolated/r1.wise-step60.parquet"):
        assert path in out, path
    assert digests(copy / "store") == before

    # --restart, interrupted right after its first point: the earlier run's files are gone, and it said so
    arm_interrupt(monkeypatch, copy / "faults", {"step": 0})
    assert main(["run", "--spec", spec, "--quiet", "--checkpoints", str(elsewhere), "--restart"]) == 130
    out = capsys.readouterr().out
    assert "rft run --restart: deleted what run r1 measured before: checkpoints/r1/step-0.safetensors, " in out
    store = ResultStore(copy / "store")
    assert [r.step for r in store.read_run(RUN)] == [0]
    assert store.derived_files(RUN) == {"checkpoints": ["checkpoints/r1/step-0.safetensors"], "attacks": [],
                                        "interpolated": []}

    # the new run resumes from its own checkpoint without --restart, and deletes nothing more
    monkeypatch.delenv("RFT_PLUGINS")
    assert main(["run", "--spec", spec, "--quiet", "--checkpoints", str(elsewhere)]) == 0
    assert "deleted" not in capsys.readouterr().out
    assert [r.step for r in store.read_run(RUN)] == STEPS and sorted(store.checkpoints(RUN)) == STEPS


# ---------------------------------------------------------------------------------------------------
# One writer per run id: two writers started truly at once


def _one_refused(outcomes, purpose: str, subject: str):
    assert sorted(o.code for o in outcomes) == [0, 2], outcomes
    winner = next(o for o in outcomes if o.code == 0)
    loser = next(o for o in outcomes if o.code == 2)
    assert "Traceback" not in loser.err
    assert f"rft: error: {subject} is being written by {purpose} (pid {winner.pid}," in loser.err, loser.err
    return outcomes.index(winner)


def test_two_runs_of_one_id_started_at_once_one_is_refused_and_the_others_run_is_whole(tmp_path):
    """The issue's reproduction: started together with different settings, both exited 0 with B's rows next to
    A's step-0 weights and A's step-60 file deleted."""
    specs = [write_spec(tmp_path, "a.yaml", **{"training.lr": 3e-3}),
             write_spec(tmp_path, "b.yaml", **{"training.lr": 1e-2, "output.keep_checkpoints": "frontier"})]
    outcomes = race(tmp_path / "race", [(rft, ("run", "--spec", spec, "--quiet")) for spec in specs],
                    preload=["rft_ray.cli", "rft_ray.training.runner"])
    won = _one_refused(outcomes, "rft run", f"run r1 in result store {tmp_path / 'store'}")
    lr, mode = (3e-3, "all") if won == 0 else (1e-2, "frontier")
    store = ResultStore(tmp_path / "store")
    records = store.read_run(RUN)
    assert [r.step for r in records] == STEPS and {r.lr for r in records} == {lr}
    assert set(store.checkpoints(RUN)) == (set(STEPS) if mode == "all" else front_steps(records, "validation"))
    state = torch.load(tmp_path / "ckpt" / RUN / "checkpoint.pt", weights_only=True)
    assert state["step"] == 60 and state["spec"]["training"]["lr"] == lr


def test_two_attacks_started_at_once_one_is_refused_and_the_winners_results_are_whole(copy):
    store = str(copy / "store")
    calls = [(rft, ("attack", store, "--attack", "pgd", "--on", "all", "--eps", eps, "--device", "cpu"))
             for eps in ("1/255", "2/255")]
    outcomes = race(copy / "race", calls, preload=["rft_ray.cli", "rft_ray.attack.runner"])
    won = _one_refused(outcomes, "rft attack", f"run r1 in result store {store}")
    table = read_sidecar(ResultStore(store).fs, sidecar_path(ResultStore(store).path, RUN)).to_pylist()
    mine, theirs = ("pgd_rerun_adv_acc/1/255", "pgd_rerun_adv_acc/2/255")[::1 if won == 0 else -1]
    assert [r["step"] for r in table] == STEPS and all(r[mine] is not None for r in table)
    assert all(theirs not in r for r in table)
    assert all(r["aa_adv_acc/4/255"] == 0.25 for r in table)  # earlier results kept


def test_two_interpolations_started_at_once_one_is_refused_and_earlier_alphas_are_kept(copy):
    store = str(copy / "store")
    calls = [(rft, ("interpolate", store, "--alphas", alphas, "--on", "final", "--device", "cpu"))
             for alphas in ("0,0.25", "0.75")]
    outcomes = race(copy / "race", calls, preload=["rft_ray.cli", "rft_ray.training.interpolate"])
    won = _one_refused(outcomes, "rft interpolate", f"run r1 in result store {store}")
    rows = ResultStore(copy / "store" / "interpolated").read_run(f"{RUN}.wise-step60")
    assert [r.wise_alpha for r in rows] == ([0.0, 0.25, 1.0] if won == 0 else [0.75, 1.0])


# ---------------------------------------------------------------------------------------------------
# One writer per sweep folder


def _sweep_spec(root: Path, **top) -> str:
    from test_sweep import tiny_experiment

    data = tiny_experiment(root / "sweep", **top)
    data["search"]["num_samples"] = 1
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_sweep_folder_held_by_another_sweep_or_holding_a_stray_tune_experiment_is_refused_before_ray(
        tmp_path, capsys):
    import ray

    from rft_ray.sweep.state import STATE_FILE, SweepFolder

    spec = _sweep_spec(tmp_path)
    folder = SweepFolder(str(tmp_path / "sweep"))
    with folder.lease():
        assert main(["sweep", spec]) == 2
        message = cli_error(capsys.readouterr().err)
        assert f"sweep folder {tmp_path / 'sweep'} is being written by rft sweep (pid {os.getpid()}," in message
    assert not (tmp_path / "sweep" / STATE_FILE).exists() and not ray.is_initialized()

    # a Tune experiment without sweep.json (another sweep's, or one that died before writing its state): Ray
    # would restore it as this sweep's own, unasked
    (tmp_path / "sweep" / "tune" / "tiny-lora-digits").mkdir(parents=True)
    (tmp_path / "sweep" / "tune" / "tiny-lora-digits" / "tuner.pkl").write_bytes(b"not ours")
    assert main(["sweep", spec]) == 2
    message = cli_error(capsys.readouterr().err)
    assert f"{tmp_path / 'sweep' / 'tune'} holds a Tune experiment but there is no {STATE_FILE}" in message
    assert "--overwrite" in message and not ray.is_initialized()


@pytest.mark.slow
def test_two_sweeps_into_one_folder_started_at_once_one_is_refused_and_the_other_completes(tmp_path):
    """The issue's reproduction: both started (sweep.json is written only after Ray starts), the second restored
    the first's Tune experiment and could set its runs aside as orphans."""
    spec = _sweep_spec(tmp_path)
    outcomes = race(tmp_path / "race", [(rft, ("sweep", spec, "--no-analysis"))] * 2,
                    preload=["rft_ray.cli", "rft_ray.sweep.driver", "ray"], timeout=600)
    _one_refused(outcomes, "rft sweep", f"sweep folder {tmp_path / 'sweep'}")
    store = ResultStore(tmp_path / "sweep" / "store")
    [run_id] = store.run_ids()
    assert [r.step for r in store.read_run(run_id)] == [0, 20, 40]
    assert not (tmp_path / "sweep" / "orphans").exists() or not any((tmp_path / "sweep" / "orphans").iterdir())


# ---------------------------------------------------------------------------------------------------
# Destinations checked before the work


def _writable(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def read_only(folder: Path):
    """`folder` and its subfolders read-only; yields whether that took (root ignores modes, so as root the
    immutable attribute is set too, where the filesystem has one)."""
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    modes = {f: f.stat().st_mode for f in folders}
    immutable = []
    try:
        for f in folders:
            f.chmod(0o555)
        if _writable(folder):
            for f in folders:
                if subprocess.run(["chattr", "+i", str(f)], capture_output=True).returncode == 0:
                    immutable.append(f)
        yield not _writable(folder)
    finally:
        for f in immutable:
            subprocess.run(["chattr", "-i", str(f)], capture_output=True)
        for f, mode in modes.items():
            f.chmod(mode)


def test_destinations_are_checked_before_any_training_or_attacking(copy, capsys):
    spec, store = str(copy / "run.yaml"), copy / "store"
    blocker = copy / "a-file"
    blocker.write_text("not a folder")
    fresh = ["run", "--spec", spec, "--quiet", "--run-id", "fresh"]
    assert main([*fresh, "--checkpoints", str(blocker)]) == 2
    assert f"output.checkpoints: {blocker} is a file, not a folder" in cli_error(capsys.readouterr().err)
    assert main([*fresh, "--json", str(copy)]) == 2
    assert f"--json: {copy} is a folder, not a file" in cli_error(capsys.readouterr().err)
    assert "fresh" not in ResultStore(store).run_ids()  # nothing trained

    attack = ["attack", str(store), "--attack", "pgd", "--on", "final", "--device", "cpu"]
    assert main(["attack", str(copy / "absent"), "--attack", "pgd"]) == 2
    assert f"result store {copy / 'absent'} does not exist" in cli_error(capsys.readouterr().err)
    shutil.move(store / "attacks", copy / "attacks-aside")
    (store / "attacks").write_text("a file where the attack results go")
    assert main(attack) == 2
    captured = capsys.readouterr()
    assert f"{store / 'attacks'} is a file, not a folder" in cli_error(captured.err)
    assert "  r1 step" not in captured.out  # nothing attacked
    (store / "attacks").unlink()
    shutil.move(copy / "attacks-aside", store / "attacks")

    (store / "interpolated" / f"{RUN}.wise-step60.parquet").unlink()
    (store / "interpolated").rmdir()
    (store / "interpolated").write_text("a file where the interpolated rows go")
    assert main(["interpolate", str(store), "--alphas", "0,1", "--on", "final", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert f"{store / 'interpolated'} is a file, not a folder" in cli_error(captured.err)
    assert "  alpha " not in captured.out  # nothing evaluated
    (store / "interpolated").unlink()

    before = digests(store)
    with read_only(store) as took:
        if took:  # the reproduction: the whole attack ran, then a PermissionError traceback
            assert main(attack) == 2
            captured = capsys.readouterr()
            assert "not writable" in cli_error(captured.err) and "  r1 step" not in captured.out
            with read_only(copy / "ckpt") as also:
                assert also and main([*fresh, "--checkpoints", str(copy / "ckpt")]) == 2
                assert "not writable" in cli_error(capsys.readouterr().err)
    assert digests(store) == before


# ---------------------------------------------------------------------------------------------------
# A full disk and a corrupt checkpoint: one clear line, the previous state intact


def fill_disk_at(real, call: int, failure=lambda: OSError(errno.ENOSPC, "No space left on device")):
    """`real(obj, path, ...)` that, at its `call`-th call, writes half the file and then fails as the library does
    when the disk is full (`failure()`)."""
    calls = {"n": 0}

    def write(obj, path, *args, **kwargs):
        if not isinstance(path, (str, os.PathLike)):  # an in-memory buffer (the verdicts' encoding): no disk
            return real(obj, path, *args, **kwargs)
        calls["n"] += 1
        real(obj, path, *args, **kwargs)
        if calls["n"] == call:
            with open(path, "r+b") as handle:
                handle.truncate(os.path.getsize(path) // 2)
            raise failure()

    return write


@pytest.mark.parametrize("where", ["checkpoint", "kept weights"])
def test_a_full_disk_at_a_point_is_one_clear_line_and_the_rerun_completes_each_point_once(
        tmp_path, monkeypatch, capsys, where):
    """The checkpoint: the kernel itself fails the step-40 checkpoint's write half-way (`fault_plugins.FillDisk`
    limits the size of files after step 20). The kept weights: safetensors fails the step-40 file as it does on a
    full disk."""
    import safetensors.torch
    from safetensors import SafetensorError

    spec = write_spec(tmp_path)
    restore = fault_plugins.disk_limits()
    if where == "checkpoint":
        (tmp_path / "faults").mkdir()
        (tmp_path / "faults" / fault_plugins.DISK_FULL_FILE).write_text('{"step": 20}')
        monkeypatch.setenv(fault_plugins.FAULT_DIR_ENV, str(tmp_path / "faults"))
        monkeypatch.setenv("RFT_PLUGINS", f"{fault_plugins.__file__}:FillDisk")
        named, reason, rows = tmp_path / "ckpt" / RUN / "checkpoint.pt", "File too large", [0, 20]
    else:
        failure = lambda: SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(safetensors.torch, "save_file", fill_disk_at(safetensors.torch.save_file, 3, failure))
        named, reason, rows = tmp_path / "store" / "checkpoints" / RUN / "step-40.safetensors", "No space left", \
            [0, 20, 40]
    try:
        code = main(["run", "--spec", spec, "--quiet"])
    finally:
        restore()
    assert code == 2
    message = cli_error(capsys.readouterr().err)
    assert f"cannot write {named}" in message and reason in message and "intact" in message
    monkeypatch.undo()
    store = ResultStore(tmp_path / "store")
    assert [r.step for r in store.read_run(RUN)] == rows
    assert torch.load(tmp_path / "ckpt" / RUN / "checkpoint.pt", weights_only=True)["step"] == rows[-1]
    hidden = [p for p in (tmp_path / "ckpt" / RUN).iterdir() if p.name.startswith(".")]
    hidden += [p for p in Path(store.checkpoint_folder(RUN)).iterdir() if p.name.startswith(".")]
    assert hidden == []  # no half-written temporary left
    assert main(["run", "--spec", spec, "--quiet"]) == 0  # space again: it resumes
    assert [r.step for r in store.read_run(RUN)] == STEPS and sorted(store.checkpoints(RUN)) == STEPS


def test_a_full_disk_while_attack_results_merge_keeps_the_earlier_results(copy, monkeypatch, capsys):
    store = ResultStore(copy / "store")
    monkeypatch.setattr(pq, "write_table", fill_disk_at(pq.write_table, 2))  # the second point's merge
    assert main(["attack", str(copy / "store"), "--attack", "pgd", "--on", "all", "--eps", "1/255",
                 "--device", "cpu"]) == 2
    message = cli_error(capsys.readouterr().err)
    assert f"cannot write {sidecar_path(store.path, RUN)}" in message and "No space left on device" in message
    monkeypatch.undo()
    rows = read_sidecar(store.fs, sidecar_path(store.path, RUN)).to_pylist()
    assert [r["aa_adv_acc/4/255"] for r in rows] == [0.25] * 4  # the previous version, whole
    assert [r["step"] for r in rows if r.get("pgd_rerun_adv_acc/1/255") is not None] == [0]  # the first point's


def test_a_corrupt_checkpoint_on_resume_is_one_clear_line_and_nothing_is_touched(copy, capsys):
    checkpoint = copy / "ckpt" / RUN / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    before = digests(copy / "store")
    assert main(["run", "--spec", str(copy / "run.yaml"), "--quiet"]) == 2
    message = cli_error(capsys.readouterr().err)
    assert f"checkpoint {checkpoint} cannot be read" in message and "--restart" in message
    assert digests(copy / "store") == before


# ---------------------------------------------------------------------------------------------------
# rft checkpoints validates each file; interrupt messages say what a rerun does


def test_rft_checkpoints_lists_damaged_and_foreign_files_as_bad_and_the_rest_as_usual(copy, capsys):
    from safetensors.torch import save_file

    folder = copy / "store" / "checkpoints" / RUN
    whole = (folder / "step-40.safetensors").stat().st_size
    with open(folder / "step-40.safetensors", "r+b") as handle:
        handle.truncate(whole - 100)  # the header intact, the tensors short
    (folder / "step-5.safetensors").write_bytes(b"not a safetensors file at all")
    (copy / "store" / "checkpoints" / "r2").mkdir()
    save_file({"w": torch.zeros(2)}, str(copy / "store" / "checkpoints" / "r2" / "step-1.safetensors"))
    assert main(["checkpoints", str(copy / "store")]) == 1
    lines = capsys.readouterr().out.splitlines()
    by_step = {(line.split()[0], int(line.split()[2])): line for line in lines if line.startswith("r")}
    assert sorted(by_step) == [("r1", 0), ("r1", 5), ("r1", 20), ("r1", 40), ("r1", 60), ("r2", 1)]
    assert f"BAD: truncated: {whole - 100} bytes, its header describes {whole}" in by_step[("r1", 40)]
    assert "BAD: not a safetensors file" in by_step[("r1", 5)]
    assert "BAD: not a weights file of rft-ray" in by_step[("r2", 1)]
    assert all("BAD" not in by_step[("r1", s)] and "clean 0." in by_step[("r1", s)] for s in (0, 20, 60))
    assert "3 of 6 kept checkpoint file(s) are bad" in lines[-1]
    assert main(["checkpoints", str(copy / "store"), "--json"]) == 1
    listed = {(c["run_id"], c["step"]): c["problem"] for c in json.loads(capsys.readouterr().out)}
    assert listed[("r1", 0)] is None and listed[("r1", 40)].startswith("truncated")

    # the commands that work on kept points leave bad files out, saying so
    assert main(["attack", str(copy / "store"), "--attack", "pgd", "--on", "all", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "note: run r1 step 40: its weights file is bad (truncated" in out and "r1 step 40 (" not in out


@pytest.mark.parametrize("argv, target, says", [
    (["run", "--quiet"], "rft_ray.training.runner.run_in_process",
     "completed evaluation points are in the result store; run the same command again to resume from the last "
     "checkpoint"),
    (["attack", "STORE", "--attack", "pgd"], "rft_ray.attack.runner.run_attacks",
     "points attacked so far are in the store's attacks/ folder; running the command again attacks every chosen "
     "point again"),
    (["interpolate", "STORE"], "rft_ray.training.interpolate.interpolate_store",
     "checkpoints interpolated so far are in the store's interpolated/ folder; running the command again "
     "evaluates every chosen checkpoint again"),
    (["sweep", "SPEC"], "rft_ray.sweep.driver.run_sweep", "continue the sweep with `rft sweep SPEC --resume`"),
])
def test_an_interrupt_says_what_a_rerun_of_that_command_does(tmp_path, monkeypatch, capsys, argv, target, says):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    spec = _sweep_spec(tmp_path)
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", interrupted)
    argv = [spec if a == "SPEC" else str(tmp_path) if a == "STORE" else a for a in argv]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("rft: interrupted; ") and says.replace("SPEC", spec) in err, err
    assert "resumes from its last checkpoint" not in err or argv[0] == "run"
