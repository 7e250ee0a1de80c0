"""MLflow runs worth comparing: provenance tags on every run, metrics at the time they were measured (also when
back-filled), each group's summary on the parent run, and the weights of each run's Pareto-optimal points,
kept while it trains and loaded back with one call. No Ray here (the sweep test checks the live path)."""
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_run

from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore
from rft_ray.specs import experiment_spec, run_spec
from rft_ray.tracking import naming
from rft_ray.tracking.metrics import group_metrics
from rft_ray.training.loop import train_loop
from rft_ray.tracking.artifacts import ARTIFACT_DIR
from rft_ray.training.weights import (
    FORMAT,
    CheckpointKeeper,
    WeightsError,
    load_finetuned,
    read_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def tiny_sweep(path: Path) -> dict:
    return {"name": "tracked", "base": {"training": {"steps": 60},
                                        "evaluation": {"schedule": [{"until": None, "every": 20}]}},
            "search": {"num_samples": 2, "objectives": [{"metric": "test_clean_acc"}]},
            "storage": {"path": str(path)}}


# ---------------------------------------------------------------------------------------------------
# Tags


def test_every_run_names_the_commit_and_the_spec_it_ran_from(monkeypatch):
    experiment = experiment_spec(tiny_sweep(Path("/tmp/unused")))
    parent = naming.parent_tags(experiment, None)
    assert parent[naming.COMMIT_TAG] == git("rev-parse", "HEAD")  # this test runs in a checkout
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    assert parent[naming.DIRTY_TAG] == str(dirty).lower()
    assert parent[naming.FINGERPRINT_TAG] == parent["fingerprint"] == experiment.fingerprint()
    [group] = experiment.groups
    child = naming.child_tags(group, "t1", "p1", naming.inherited_tags(parent))
    assert {k: child[k] for k in naming.PROVENANCE_TAGS} == {k: parent[k] for k in naming.PROVENANCE_TAGS}
    assert child[naming.PARENT_TAG] == "p1" and child["run_id"] == f"{group.name}-t1"
    # A parent logged before these tags existed still gives its children the spec fingerprint.
    assert naming.inherited_tags({"fingerprint": "abc", "sweep": "x"}) == {naming.FINGERPRINT_TAG: "abc"}

    # Not a checkout: no git, or the package installed inside another repository: no commit tag at all.
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(naming.subprocess, "run", no_git)
    assert naming.source_tags.__wrapped__() == {}
    monkeypatch.setattr(naming.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout="/somewhere/else\n0123abcd\n"))
    assert naming.source_tags.__wrapped__() == {}


# ---------------------------------------------------------------------------------------------------
# The parent run's per-group metrics


def test_summary_rows_become_per_group_parent_metrics():
    experiment = experiment_spec({**tiny_sweep(Path("/tmp/unused")), "strategies": ["lora", "bitfit"]})
    rows = [{"strategy": "lora", "dataset": "digits", "frontier_auc": 0.25, "final_acc": 0.8, "final_pgd": 0.3,
             "peak_pgd": 0.45, "peak_acc": 0.9},
            {"strategy": "bitfit", "dataset": "digits", "frontier_auc": 0.1, "final_acc": 0.5, "final_pgd": 0.2,
             "peak_pgd": 0.2, "peak_acc": 0.6},
            {"strategy": "full", "dataset": "a=b", "frontier_auc": 0.0, "final_acc": 0.1, "final_pgd": 0.0,
             "peak_pgd": float("inf"), "peak_acc": 0.1}]  # a group this spec lacks; MLflow refuses '=' and inf
    metrics = group_metrics(rows, experiment.groups)
    assert {k: v for k, v in metrics.items() if k.startswith("lora-digits/")} == pytest.approx({
        "lora-digits/frontier_auc": 0.25, "lora-digits/best_final_acc": 0.8, "lora-digits/best_final_pgd_acc": 0.3,
        "lora-digits/peak_pgd_acc": 0.45, "lora-digits/pgd_drop": 0.15})
    assert metrics["bitfit-digits/pgd_drop"] == 0.0
    assert "full-a_b/frontier_auc" in metrics and "full-a_b/peak_pgd_acc" not in metrics
    assert "full-a_b/pgd_drop" not in metrics  # inf - 0.0


# ---------------------------------------------------------------------------------------------------
# `rft sync-mlflow`: measured times, tags, the parent's group metrics, trial weights


def _record(run_id: str, step: int, measured_at: float | None, **kw) -> EvalRecord:
    base = dict(run_id=run_id, strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                step=step, total_steps=60, epoch=0.0, examples_seen=0, train_loss=0.1, train_clean_acc=0.5,
                test_clean_acc=0.3 + step / 200, pgd_adv_acc=0.4 - step / 400, pgd_eps=1 / 255,
                test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5,
                measured_at=measured_at, ood_acc={"contrast": 0.3},
                val_clean_acc=0.32 + step / 200, val_pgd_adv_acc=0.38 - step / 400)  # what selections read
    base.update(kw)
    return EvalRecord(**base)


def test_backfill_keeps_measured_times_tags_group_metrics_and_weights(tmp_path):
    from mlflow.tracking import MlflowClient
    from safetensors.torch import save_file

    from analysis.summary import sweep_summary
    from rft_ray.sweep.state import SweepFolder
    from rft_ray.tracking.backfill import sync_mlflow

    experiment = experiment_spec(tiny_sweep(tmp_path / "sweep"))
    root = experiment.storage_root
    measured = {0: 1_700_000_000.25, 20: 1_700_000_100.5, 40: 1_700_000_200.75, 60: 1_700_000_300.0}
    store = ResultStore(experiment.store_root)
    store.write_run("lora-digits-a1", [_record("lora-digits-a1", s, t) for s, t in measured.items()])
    store.write_run("lora-digits-b2", [_record("lora-digits-b2", s, None) for s in (0, 20)])  # stored before times
    # a1 kept two points' weights in the store (b2 none); a Train checkpoint's old `weights/` folder is not read.
    Path(store.checkpoint_folder("lora-digits-a1")).mkdir(parents=True)
    for step in (20, 60):
        save_file({"w": torch.full((2,), float(step))}, store.checkpoint_path("lora-digits-a1", step),
                  metadata={"format": FORMAT})
    old = Path(root, "train", "lora-digits-b2", "checkpoint_2024-01-01_00-00-00.000001", "weights")
    old.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(old / "step-0.safetensors"), metadata={"format": FORMAT})
    trials = [{"trial_id": "a1", "run_id": "lora-digits-a1", "status": "completed"},
              {"trial_id": "b2", "run_id": "lora-digits-b2", "status": "error", "error": "diverged"}]
    SweepFolder(root).write_state({"name": "tracked", "fingerprint": experiment.fingerprint(),
                                   "spec": experiment.to_dict(), "parent_run_id": None, "finished": "now",
                                   "groups": {"lora-digits": {"trials": trials}}})

    before = int(time.time() * 1000)
    report = sync_mlflow(root, SweepFolder(root).read_state(), log=lambda message: None)
    after = int(time.time() * 1000)
    assert report.runs == 2 and report.weights_logged == 2
    client = MlflowClient(tracking_uri=report.uri)
    runs = {r.data.tags.get("run_id", "parent"): r for r in client.search_runs([report.experiment_id])}
    a1, b2, parent = runs["lora-digits-a1"].info.run_id, runs["lora-digits-b2"].info.run_id, report.parent_run_id
    for key in ("test_clean_acc", "pgd_adv_acc", "ood_acc/contrast"):
        history = sorted((m.step, m.timestamp) for m in client.get_metric_history(a1, key))
        assert history == [(s, int(t * 1000)) for s, t in measured.items()]  # the time measured, not of the back-fill
    assert all(before <= m.timestamp <= after for m in client.get_metric_history(b2, "test_clean_acc"))

    head = git("rev-parse", "HEAD")
    for run in runs.values():
        assert run.data.tags[naming.COMMIT_TAG] == head
        assert run.data.tags[naming.FINGERPRINT_TAG] == experiment.fingerprint()
        assert run.data.tags[naming.DIRTY_TAG] in ("true", "false")

    [row] = sweep_summary(store.read())
    metrics = client.get_run(parent).data.metrics
    assert metrics["lora-digits/frontier_auc"] == pytest.approx(row["frontier_auc"]) and row["frontier_auc"] > 0
    assert metrics["lora-digits/best_final_acc"] == pytest.approx(row["final_acc"])
    assert row["peak_pgd"] > row["final_pgd"]  # the handmade robustness falls as training goes on
    assert metrics["lora-digits/pgd_drop"] == pytest.approx(row["peak_pgd"] - row["final_pgd"])
    [auc] = client.get_metric_history(parent, "lora-digits/frontier_auc")
    assert auc.timestamp == int(max(measured.values()) * 1000)

    assert sorted(a.path for a in client.list_artifacts(a1, ARTIFACT_DIR)) == [
        "weights/step-20.safetensors", "weights/step-60.safetensors"]  # the store's files, as kept
    assert client.list_artifacts(b2, ARTIFACT_DIR) == []  # none in the store: nothing to log

    again = sync_mlflow(root, SweepFolder(root).read_state(), log=lambda message: None)
    assert (again.points_logged, again.weights_logged, again.created_runs) == (0, 0, [])
    assert len(client.get_metric_history(a1, "test_clean_acc")) == 4
    assert len(client.get_metric_history(parent, "lora-digits/frontier_auc")) == 1


def test_old_stores_without_measured_times_still_read(tmp_path):
    import pyarrow.parquet as pq

    store = ResultStore(tmp_path)
    store.write_run("r", [_record("r", 0, 1.5e9)])
    table = pq.read_table(tmp_path / "r.parquet")
    pq.write_table(table.drop_columns(["measured_at"]), tmp_path / "r.parquet")  # as written before the field
    [old] = store.read_run("r")
    assert old.measured_at is None and old.test_clean_acc == pytest.approx(0.3)
    store.write_run("s", [_record("s", 0, 1.5e9)])
    assert store.read().column("measured_at").to_pylist() == [None, 1.5e9]


def test_two_copies_of_a_point_measured_at_two_times_are_one_point_to_the_analysis():
    """As wall_seconds: a point measured again (a restarted worker) is the same point, not a conflict."""
    import pyarrow as pa

    from analysis.cleaning import clean_table
    from rft_ray.results.record import arrow_schema

    rows = [_record("r", 0, 1.5e9).to_row(), _record("r", 0, 1.5e9 + 60).to_row()]
    with pytest.warns(UserWarning, match="duplicate"):
        clean, report = clean_table(pa.Table.from_pylist(rows, schema=arrow_schema(rows[0])))
    assert clean.num_rows == 1 and report.dropped == {"duplicate row of one (run_id, step)": 1}


# ---------------------------------------------------------------------------------------------------
# CheckpointKeeper (output.keep_checkpoints: frontier) and load_finetuned


def front(records) -> set[int]:
    """Steps no other point dominates, of equal points the first: what the observer must keep."""
    points = [(r.test_clean_acc, r.pgd_adv_acc, r.step) for r in records]
    return {s for a, b, s in points
            if not any(a2 >= a and b2 >= b and (a2, b2) != (a, b) for a2, b2, _ in points)
            and not any((a2, b2) == (a, b) and s2 < s for a2, b2, s2 in points)}


EVERY_10 = {"evaluation.schedule": [{"until": None, "every": 10}]}


class Watch:
    """After the keeper at every point: which files the store holds, and the run's own logits on fixed images."""

    def __init__(self, store: ResultStore, run_id: str):
        self.store, self.run_id, self.kept, self.logits = store, run_id, {}, {}
        self.images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def on_run_start(self, context):
        self.model = context.model

    def records_changed(self, records, checkpoint_dir):
        self.kept[records[-1].step] = (sorted(self.store.checkpoints(self.run_id)), front(records))
        training = self.model.training
        with torch.no_grad():
            self.logits[records[-1].step] = self.model.eval()(self.images)
        self.model.train(training)


def test_frontier_weights_keep_the_front_and_load_back_the_same_model(tmp_path):
    from rft_ray.evaluation.evaluator import EvalSets, evaluate
    from rft_ray.training.setup import Run

    # seed 1: a run whose test front holds two points at some step (seed 0's, since heads are always fresh, has
    # one); the keeper keeps the test front (as under search.select_on: test), the one `front` computes
    spec = run_spec(tiny_run(tmp_path, **EVERY_10, **{"training.seed": 1}))
    store = ResultStore(spec.output.results)
    watch = Watch(store, spec.run_id)
    records = train_loop(spec, [CheckpointKeeper(store, spec.run_id, "frontier", "test"), watch],
                         checkpoint_dir=tmp_path / "ckpt")
    assert [r.step for r in records] == [0, 10, 20, 30, 40, 50, 60]
    for step, (kept, expected) in watch.kept.items():
        assert kept == sorted(expected), (step, [(r.step, r.test_clean_acc, r.pgd_adv_acc) for r in records])
    # This seeded run has a front of two points at some step, and points that later fall off it (the test
    # would pass vacuously on a run whose every point beats the one before).
    assert max(len(expected) for _, expected in watch.kept.values()) > 1
    assert len(front(records)) < len(records)
    assert Path(store.checkpoint_folder(spec.run_id)) == tmp_path / "store" / "checkpoints" / spec.run_id

    sets = EvalSets.from_bundle(Run.build(spec).bundle, spec)
    by_step = {r.step: r for r in records}
    for step, path in store.checkpoints(spec.run_id).items():
        tensors, metadata = read_weights(path)
        assert metadata["step"] == str(step) and metadata["run_id"] == spec.run_id
        assert run_spec(json.loads(metadata["spec"])).to_dict() == spec.to_dict()
        model = load_finetuned(path)
        with torch.no_grad():
            assert torch.allclose(model(watch.images), watch.logits[step], atol=1e-5)
        measured = evaluate(model, sets, spec, torch.device("cpu"), None)
        assert measured["test_clean_acc"] == by_step[step].test_clean_acc
        assert measured["pgd_adv_acc"] == by_step[step].pgd_adv_acc

    # Names are checked both ways; a file without our metadata is refused before any model is built.
    from safetensors.torch import save_file

    path = next(iter(store.checkpoints(spec.run_id).values()))
    tensors, metadata = read_weights(path)
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(tmp_path / "less.safetensors"), metadata)
    with pytest.raises(WeightsError, match=f"missing \\['{dropped}'\\]"):
        load_finetuned(tmp_path / "less.safetensors")
    save_file({**tensors, "extra": torch.zeros(1)}, str(tmp_path / "more.safetensors"), metadata)
    with pytest.raises(WeightsError, match="unexpected \\['extra'\\]"):
        load_finetuned(tmp_path / "more.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="not a weights file"):
        load_finetuned(tmp_path / "plain.safetensors")


def contents(path) -> tuple:
    """A weights file's metadata and tensors, comparable with ==."""
    tensors, metadata = read_weights(path)
    return tuple(sorted(metadata.items())), tuple((k, tuple(v.flatten().tolist())) for k, v in sorted(tensors.items()))


class Interrupt(Exception):
    pass


class StopAt:
    def __init__(self, step: int):
        self.step = step

    def records_changed(self, records, checkpoint_dir):
        if records[-1].step == self.step:
            raise Interrupt()


@pytest.mark.parametrize("mode", ["frontier", "all"])
def test_a_resumed_run_ends_with_exactly_the_files_its_mode_implies(tmp_path, mode):
    """As a restarted worker or `rft run` after a crash: the store holds files of points the interrupted attempt
    measured after the checkpoint it resumes from (it got to step 40; its checkpoint is from step 20)."""
    import shutil
    import warnings

    from rft_ray.training.weights import kept_steps_for

    class Snapshot:
        def __init__(self):
            self.seen = []

        def records_changed(self, records, checkpoint_dir):
            files = store.checkpoints(spec.run_id)
            self.seen.append((records[-1].step, kept_steps_for(mode, records, "test"),
                              {s: contents(p) for s, p in files.items()}))

    # lr 5e-3, seed 4: a trajectory whose test front at step 20 is {10, 20} and whose step 30 beats both (found by
    # trying seeds once heads were always fresh; seed 0 at the default lr no longer had that shape); the keepers
    # keep the test front (a sweep with search.select_on: test), the one of that shape
    spec = run_spec(tiny_run(tmp_path, **EVERY_10, **{"output.keep_checkpoints": mode, "training.lr": 5e-3,
                                                      "training.seed": 4}))
    store = ResultStore(spec.output.results)
    attempt, at_20 = tmp_path / "attempt", tmp_path / "at-20"
    with pytest.raises(Interrupt):
        train_loop(spec, [CheckpointKeeper(store, spec.run_id, mode, "test"), StopAt(20)], checkpoint_dir=attempt)
    shutil.copytree(attempt, at_20)  # the last checkpoint the restarted run will find
    files_at_20 = {step: contents(path) for step, path in store.checkpoints(spec.run_id).items()}
    with pytest.raises(Interrupt):
        train_loop(spec, [CheckpointKeeper(store, spec.run_id, mode, "test"), StopAt(40)], checkpoint_dir=attempt,
                   resume_from=attempt)
    assert max(store.checkpoints(spec.run_id)) == 40
    snapshot = Snapshot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = train_loop(spec, [CheckpointKeeper(store, spec.run_id, mode, "test"), snapshot], checkpoint_dir=at_20,
                             resume_from=at_20)
    lost = [str(w.message) for w in caught if "cannot be remade" in str(w.message)]
    step, expected, files = snapshot.seen[0]  # the restored records, before any new point
    assert step == 20 and all(s <= 20 for s in files)  # the later points' files are gone
    if mode == "all":
        assert files == files_at_20 and set(files) == expected == {0, 10, 20} and not lost
    else:
        # This seeded run's step 30 beat both points of the front at step 20, so the attempt that got to 40 deleted
        # their files: 20's comes back from the restored model, 10's cannot, and the run says so.
        assert set(files_at_20) == expected == {10, 20} and files == {}
        assert len(lost) == 1 and "step(s) [10]" in lost[0], lost
    assert all(set(files) == expected for _, expected, files in snapshot.seen[1:])
    assert set(store.checkpoints(spec.run_id)) == kept_steps_for(mode, records, "test") and records[-1].step == 60
    assert (mode == "all") == (set(store.checkpoints(spec.run_id)) == {r.step for r in records})


def test_a_resumed_run_remakes_the_restored_points_missing_file(tmp_path):
    """A worker killed after writing the store and before writing the weights: the restored model holds that
    point's weights, so its file is saved again, holding what it would have held."""
    spec = run_spec(tiny_run(tmp_path, **EVERY_10, **{"output.keep_checkpoints": "all"}))
    store = ResultStore(spec.output.results)
    with pytest.raises(Interrupt):
        train_loop(spec, [CheckpointKeeper(store, spec.run_id, "all"), StopAt(20)], checkpoint_dir=tmp_path / "ckpt")
    path = Path(store.checkpoint_path(spec.run_id, 20))
    tensors, metadata = read_weights(path)
    path.unlink()
    with pytest.raises(Interrupt):
        train_loop(spec, [CheckpointKeeper(store, spec.run_id, "all"), StopAt(30)], checkpoint_dir=tmp_path / "next",
                   resume_from=tmp_path / "ckpt")
    assert sorted(store.checkpoints(spec.run_id)) == [0, 10, 20, 30]
    again, metadata_again = read_weights(path)  # (not byte for byte: safetensors orders metadata keys at random)
    assert metadata_again == metadata and again.keys() == tensors.keys()
    assert all(torch.equal(again[name], tensors[name]) for name in tensors)
