import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_run
from fault_plugins import NAN_FILE, NAN_FIRED_FILE, fault_env

from rft_ray.config import SpecError
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore
from rft_ray.specs import run_spec
from rft_ray.training.loop import TrainingDiverged, train_loop
from rft_ray.training.runner import StoreObserver, run_in_process

METRICS = ["step", "epoch", "examples_seen", "train_loss", "train_clean_acc", "test_clean_acc", "pgd_adv_acc",
           "test_ood_accuracy", "ood_acc"]


def metrics(records):
    def comparable(value):
        return None if isinstance(value, float) and math.isnan(value) else value  # NaN != NaN

    return [{k: comparable(getattr(r, k)) for k in METRICS} for r in records]


class Interrupt(Exception):
    pass


class StopAfter:
    def __init__(self, points):
        self.points, self.seen = points, 0

    def records_changed(self, records, checkpoint_dir):
        self.seen += 1
        if self.seen == self.points:
            raise Interrupt()


def test_run_follows_schedule_and_writes_store_and_json(tmp_path):
    spec = run_spec(tiny_run(tmp_path))
    result = run_in_process(spec, progress=False, json_path=tmp_path / "run.json")
    steps = [r.step for r in result.records]
    assert steps == EvalSchedule.from_spec(spec.evaluation).points(60) == [0, 20, 40, 60]
    rows = ResultStore(spec.output.results).read().to_pylist()
    assert [r["step"] for r in rows] == steps
    for row in rows:
        assert 0 <= row["pgd_adv_acc"] <= row["test_clean_acc"] <= 1
        assert set(k for k in row if k.startswith("ood_acc/")) == {"ood_acc/contrast", "ood_acc/gaussian_noise"}
        assert row["run_id"] == spec.run_id and row["trainable_params"] < row["total_params"]
        # how many images each metric was measured on (pgd.examples is null: the whole test subset)
        assert (row["train_images"], row["test_images"], row["pgd_images"]) == (40, 40, 40)
        assert row["ood_images/contrast"] == row["ood_images/gaussian_noise"] == 20
        # validation at every point: a 40-image subset of the held-out split, PGD on 20 of them, no OOD unless asked
        assert (row["val_images"], row["val_pgd_images"]) == (40, 20)
        assert 0 <= row["val_pgd_adv_acc"] <= row["val_clean_acc"] <= 1
        assert row["val_ood_accuracy"] is None and row["val_ood_images"] is None
    assert math.isnan(rows[0]["train_loss"]) and rows[-1]["train_loss"] > 0
    assert rows[-1]["test_clean_acc"] > rows[0]["test_clean_acc"]  # it learns
    assert rows[-1]["val_clean_acc"] > rows[0]["val_clean_acc"]  # and validation sees it
    assert rows[-1]["examples_seen"] == 60 * 16
    # Per-image verdicts beside the records (rft_ray.results.verdicts): every point, every metric, and their means
    # are the recorded accuracies.
    verdicts = ResultStore(spec.output.results).read_verdicts(spec.run_id)
    assert sorted(verdicts.points) == steps
    for row in rows:
        point = verdicts.points[row["step"]]
        assert set(point) == {"test_clean_acc", "pgd_adv_acc", "ood_acc/contrast", "ood_acc/gaussian_noise",
                              "val_clean_acc", "val_pgd_adv_acc"}
        for metric, ok in point.items():
            assert ok.mean() == pytest.approx(row[metric], abs=1e-6), metric  # accuracy() is float32
            assert len(ok) == len(verdicts.subset_of(metric).indices)
    assert len(verdicts.subsets["test"].indices) == 40 and len(verdicts.subsets["val/pgd"].indices) == 20
    paper = json.loads((tmp_path / "run.json").read_text())
    assert [p["step"] for p in paper] == steps
    assert set(paper[0]) == {"step", "epoch", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy"}


def test_same_spec_and_seed_give_same_numbers_and_other_seed_differs(tmp_path):
    first = run_in_process(run_spec(tiny_run(tmp_path / "a", **{"training.steps": 20})), progress=False)
    second = run_in_process(run_spec(tiny_run(tmp_path / "b", **{"training.steps": 20})), progress=False)
    assert metrics(first.records) == metrics(second.records)
    other = run_in_process(run_spec(tiny_run(tmp_path / "c", **{"training.steps": 20, "training.seed": 1})),
                           progress=False)
    assert metrics(other.records) != metrics(first.records)


@pytest.mark.parametrize("strategy, points_before_kill", [("full", 2), ("adapter", 2), ("lora", 1)])
def test_resume_from_checkpoint_gives_the_same_records(tmp_path, strategy, points_before_kill):
    data = tiny_run(tmp_path / "whole", **{"strategy.name": strategy, "training.augment": "crop_flip"})
    whole = run_in_process(run_spec(data), progress=False).records

    data = tiny_run(tmp_path / "cut", **{"strategy.name": strategy, "training.augment": "crop_flip"})
    spec = run_spec(data)
    checkpoints = tmp_path / "cut" / "ckpt" / spec.run_id
    with pytest.raises(Interrupt):  # dies after step 0 or 20, having written its points as rft run does
        train_loop(spec, [StoreObserver(ResultStore(spec.output.results), spec.run_id), StopAfter(points_before_kill)],
                   checkpoint_dir=checkpoints)
    resumed = run_in_process(spec, progress=False)
    assert resumed.resumed
    assert metrics(resumed.records) == metrics(whole)
    assert [r["step"] for r in ResultStore(spec.output.results).read().to_pylist()] == [0, 20, 40, 60]
    # the resumed run's verdicts: the interrupted part's, read back from the sidecar, and the rest; all as whole's
    cut, whole_verdicts = (ResultStore(d).read_verdicts(spec.run_id) for d in (spec.output.results,
                                                                               tmp_path / "whole" / "store"))
    assert sorted(cut.points) == sorted(whole_verdicts.points) == [0, 20, 40, 60]
    for step, point in whole_verdicts.points.items():
        assert {m: v.tolist() for m, v in cut.points[step].items()} == {m: v.tolist() for m, v in point.items()}


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path):
    spec = run_spec(tiny_run(tmp_path, **{"training.steps": 20}))
    run_in_process(spec, progress=False)
    changed = run_spec(tiny_run(tmp_path, **{"training.steps": 20, "evaluation.pgd.steps": 4,
                                                      "output.run_id": spec.run_id}))
    with pytest.raises(SpecError, match="different settings in evaluation"):
        run_in_process(changed, progress=False)
    assert len(run_in_process(changed, progress=False, restart=True).records) == 2


def test_diverging_loss_stops_the_run_and_keeps_its_records(tmp_path, monkeypatch):
    """The loss turns NaN at step 30 (weights poisoned by a loop plugin loaded from RFT_PLUGINS, as a user's
    plugin would be): the run stops with TrainingDiverged naming the step, and the points before it stay."""
    spec = run_spec(tiny_run(tmp_path))
    faults = tmp_path / "faults"
    faults.mkdir()
    for key, value in fault_env(faults).items():
        monkeypatch.setenv(key, value)
    (faults / NAN_FILE).write_text(json.dumps({"step": 30, "run_id_contains": spec.run_id}))
    with pytest.raises(TrainingDiverged, match="loss became nan at step 30"):
        run_in_process(spec, progress=False)
    assert [r.step for r in ResultStore(spec.output.results).read_run(spec.run_id)] == [0, 20]
    assert json.loads((faults / NAN_FIRED_FILE).read_text())["run_id"] == spec.run_id


def test_divergence_is_read_on_the_host_only_at_checks_and_names_the_first_bad_step():
    from rft_ray.training.loop import LossTracker

    tracker = LossTracker(torch.device("cpu"))
    for step, value in enumerate([2.0, 1.0, float("nan"), float("inf"), 3.0], start=1):
        tracker.add(torch.tensor(value), step)
    with pytest.raises(TrainingDiverged, match=r"^run r: loss became nan at step 3 \(lr 1\); the 2 records"):
        tracker.check("run r", "lr 1", kept=2)
    healthy = LossTracker(torch.device("cpu"))
    for step, value in enumerate([2.0, 1.0, 3.0], start=1):
        healthy.add(torch.tensor(value), step)
    healthy.check("run r", "lr 1", kept=0)  # finite: nothing raised
    assert healthy.take_mean() == pytest.approx(2.0)
    healthy.add(torch.tensor(5.0), 4)
    assert healthy.take_mean() == 5.0  # the mean since the last read


@pytest.mark.parametrize("given, workers", [("4", 3), ("1", 0), ("", None)])
def test_num_workers_auto_is_the_runs_cpus_less_one(monkeypatch, given, workers):
    import os

    from rft_ray.training.setup import resolve_workers

    monkeypatch.setenv("OMP_NUM_THREADS", given)
    expected = workers if workers is not None else max(0, len(os.sched_getaffinity(0)) - 1)
    assert resolve_workers("auto") == expected and resolve_workers(2) == 2
    assert run_spec({"training": {"num_workers": "auto"}}).training.num_workers == "auto"
    with pytest.raises(SpecError, match="training.num_workers"):
        run_spec({"training": {"num_workers": "many"}})


def test_a_plugin_sees_every_step_and_point_in_order(tmp_path):
    """Observers passed to the loop get on_run_start once, on_step_start before each step (1-based) and
    every evaluation point's records, in the order given."""
    spec = run_spec(tiny_run(tmp_path, **{"training.steps": 40}))
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def on_run_start(self, run):
            calls.append((self.name, "start", run.run_id, run.total_steps))

        def on_step_start(self, step, run):
            calls.append((self.name, "step", step))

        def records_changed(self, records, checkpoint_dir):
            calls.append((self.name, "point", records[-1].step))

    train_loop(spec, [Recorder("a"), Recorder("b")])
    assert calls[:2] == [("a", "start", spec.run_id, 40), ("b", "start", spec.run_id, 40)]
    assert [c[2] for c in calls if c[:2] == ("a", "step")] == list(range(1, 41))
    assert [c[2] for c in calls if c[:2] == ("a", "point")] == [0, 20, 40]
    points = [c[0] for c in calls if c[1] == "point"]
    assert points == ["a", "b"] * 3


def test_plugins_named_in_the_environment_load_or_fail_naming_the_entry(tmp_path, monkeypatch):
    from rft_ray.training.plugins import PluginError, plugins_from_env

    plugin_file = tmp_path / "mine.py"
    plugin_file.write_text("class Mine:\n    pass\n")
    monkeypatch.setenv("RFT_PLUGINS", f"{plugin_file}:Mine, json:JSONDecoder")
    loaded = plugins_from_env()
    assert [type(p).__name__ for p in loaded] == ["Mine", "JSONDecoder"]
    for entry, message in [("nonexistent_module_xyz:Thing", "cannot be imported"), ("json:Nothing", "no class"),
                           ("no-colon", "is not 'module:attribute'"), (f"{tmp_path}/absent.py:X", "does not exist")]:
        monkeypatch.setenv("RFT_PLUGINS", entry)
        with pytest.raises(PluginError, match=message) as info:
            plugins_from_env()
        assert entry in str(info.value)


def test_records_round_trip_through_rows(tmp_path):
    spec = run_spec(tiny_run(tmp_path, **{"training.steps": 20}))
    records = run_in_process(spec, progress=False).records
    again = [EvalRecord.from_row(r.to_row()) for r in records]
    assert metrics(again) == metrics(records)


def test_extra_eps_measures_what_a_run_at_that_eps_measures(tmp_path):
    """pgd_adv_acc/<radius> equals pgd_adv_acc of the same run made with that radius (alpha scaled alike)."""
    from analysis.report import analyze

    both = run_spec(tiny_run(tmp_path / "a", **{"evaluation.pgd.extra_eps": ["12/255"]}))
    alone = run_spec(tiny_run(tmp_path / "b", **{"evaluation.pgd.eps": "12/255",
                                                          "evaluation.pgd.alpha": "3/255"}))
    with_extra = run_in_process(both, progress=False).records
    single = run_in_process(alone, progress=False).records
    assert [r.pgd_extra["12/255"] for r in with_extra] == [r.pgd_adv_acc for r in single]
    assert any(r.pgd_extra["12/255"] < r.pgd_adv_acc for r in with_extra)  # a larger radius does break images
    table = ResultStore(str(tmp_path / "a" / "store")).read()
    assert "pgd_adv_acc/12/255" in table.column_names
    # The analysis of the extra radius is the analysis of the run made at it; without --eps, the spec's own eps.
    extra = analyze(tmp_path / "a" / "store", tmp_path / "out-a", figures=False, eps=12 / 255).data
    made = analyze(tmp_path / "b" / "store", tmp_path / "out-b", figures=False).data
    default = analyze(tmp_path / "a" / "store", tmp_path / "out-c", figures=False).data
    assert extra["auc"] == made["auc"] and extra["conventions"]["pgd_eps"] == [round(12 / 255, 9)]
    assert default["conventions"]["pgd_eps"] == [round(4 / 255, 9)]
    assert default["conventions"]["other_pgd_eps"] == [round(12 / 255, 9)]


def test_extra_eps_must_differ_from_eps(tmp_path):
    with pytest.raises(SpecError, match=r"evaluation\.pgd\.extra_eps: radii must differ"):
        run_spec(tiny_run(tmp_path, **{"evaluation.pgd.extra_eps": ["4/255"]}))
    with pytest.raises(SpecError, match=r"evaluation\.pgd\.extra_eps\[0\]: must be in \(0, 1\]"):
        run_spec(tiny_run(tmp_path, **{"evaluation.pgd.extra_eps": [-0.01]}))


def reference_crop_flip(images, seed):
    """The augmentation as it ran on the host before: per-image slices of the reflection-padded batch."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    n, _, size, _ = images.shape
    pad = max(1, size // 8)
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


@pytest.mark.parametrize("size", [16, 32])
def test_crop_flip_in_one_gather_is_the_per_image_augmentation(size):
    from rft_ray.training.setup import crop_flip

    images = torch.randint(0, 256, (24, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for seed in (0, 7, 12345):
        augmented = crop_flip(images, seed)
        assert torch.equal(augmented, reference_crop_flip(images, seed))
        assert augmented.shape == images.float().shape and not torch.equal(augmented, images.float())


def test_prefetched_batches_are_the_same_batches_and_errors_reach_the_loop():
    from rft_ray.training.setup import Prefetched

    source = [(torch.full((2, 3), i), torch.tensor([i, i])) for i in range(7)]
    prefetched = Prefetched(iter(source), depth=2)
    assert [int(images[0, 0]) for images, _ in (next(prefetched) for _ in range(7))] == list(range(7))
    prefetched.close()
    assert not prefetched.thread.is_alive()

    def failing():
        yield torch.zeros(1), torch.zeros(1)
        raise OSError("disk gone")

    broken = Prefetched(failing())
    next(broken)
    with pytest.raises(OSError, match="disk gone"):
        next(broken)
    endless = Prefetched(((torch.zeros(1), torch.zeros(1)) for _ in iter(int, 1)), depth=1)
    next(endless)
    endless.close()  # a thread blocked on a full queue still stops
    assert not endless.thread.is_alive()


def test_training_batches_come_ahead_in_a_thread_for_a_gpu_only():
    """On the CPU the training thread gathers its own batches (a second thread's torch ops would take the cores
    from the step); for a GPU a thread prepares them ahead. The batches are the same either way."""
    import threading

    from rft_ray.data.base import ArrayImageSet
    from rft_ray.training.setup import BatchOrder, Prefetched, train_batches

    images = ArrayImageSet(np.arange(20 * 8 * 8 * 3, dtype=np.uint8).reshape(20, 8, 8, 3) % 251,
                           np.arange(20) % 4, size=8)
    order = BatchOrder(len(images), 6, seed=3)
    before = threading.active_count()
    plain = train_batches(images, order, start_step=2, num_workers=0, device=torch.device("cpu"))
    assert not isinstance(plain, Prefetched) and threading.active_count() == before
    ahead = Prefetched(((p, y) for p, y in train_batches(images, order, 2, 0)), depth=2)
    for _ in range(5):
        (a, la), (b, lb) = next(plain), next(ahead)
        assert torch.equal(a, b) and torch.equal(la, lb)
    plain.close()
    ahead.close()


@pytest.mark.slow
def test_compiled_training_measures_what_eager_training_measures(tmp_path):
    """`training.compile` (torch.compile in place, ~2 min on 2 CPU cores for this tiny run): the same
    parameter names in the checkpoint, and the same evaluation points as the eager run, up to float rounding."""
    from rft_ray.training.checkpoint import load_checkpoint

    results, specs = {}, {}
    for compiled in (False, True):
        specs[compiled] = run_spec(tiny_run(tmp_path / str(compiled), **{"training.compile": compiled,
                                                                          "training.steps": 20}))
        results[compiled] = train_loop(specs[compiled], [], checkpoint_dir=tmp_path / f"ckpt-{compiled}",
                                       progress=False)
    eager, compiled = results[False], results[True]
    assert [r.step for r in compiled] == [r.step for r in eager] == [0, 20]
    for a, b in zip(eager, compiled):
        assert (b.test_clean_acc, b.pgd_adv_acc, b.train_clean_acc) == pytest.approx(
            (a.test_clean_acc, a.pgd_adv_acc, a.train_clean_acc), abs=0.026)  # one image of 40 may flip
    assert compiled[-1].train_loss == pytest.approx(eager[-1].train_loss, rel=1e-3)
    names = [set(load_checkpoint(tmp_path / f"ckpt-{c}", specs[c])["trainable"]) for c in (False, True)]
    assert names[0] == names[1] and names[0]
