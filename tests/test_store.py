import math
import os

import pyarrow.parquet as pq
import pytest

from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore, StoreError


def record(run_id="r1", step=0, ood=None, **kw):
    base = dict(run_id=run_id, strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                step=step, total_steps=10, epoch=0.0, examples_seen=0, train_loss=float("nan"),
                train_clean_acc=0.5, test_clean_acc=0.4, pgd_adv_acc=0.2, pgd_eps=1 / 255, test_ood_accuracy=0.3,
                trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5,
                ood_acc=ood if ood is not None else {"contrast": 0.3})
    base.update(kw)
    return EvalRecord(**base)


def test_write_replaces_and_reads_back(tmp_path):
    store = ResultStore(tmp_path / "s")
    store.write_run("r1", [record(step=0), record(step=5)])
    store.write_run("r1", [record(step=0), record(step=5), record(step=10)])
    assert [r.step for r in store.read_run("r1")] == [0, 5, 10]
    table = store.read()
    assert table.num_rows == 3 and table.column("ood_acc/contrast").to_pylist() == [0.3] * 3
    assert math.isnan(store.read_run("r1")[0].train_loss)
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["r1.parquet"]  # no temporary files left


def test_runs_with_different_ood_domains_read_as_one_table(tmp_path):
    store = ResultStore(tmp_path)
    store.write_run("a", [record("a", ood={"x": 0.1})])
    store.write_run("b", [record("b", ood={"y": 0.2})])
    table = store.read()
    assert table.column("run_id").to_pylist() == ["a", "b"]
    assert table.column("ood_acc/x").to_pylist() == [0.1, None]
    assert table.column("ood_acc/y").to_pylist() == [None, 0.2]
    assert store.read_run("b")[0].ood_acc == {"y": 0.2}


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.write_run("r1", [record(step=0)])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        store.write_run("r1", [record(step=0), record(step=5)])
    monkeypatch.undo()
    assert [r.step for r in store.read_run("r1")] == [0]
    assert sorted(os.listdir(tmp_path)) == ["r1.parquet"]


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "x" * 300])
def test_bad_run_ids_are_refused(tmp_path, bad):
    with pytest.raises(StoreError, match="run id"):
        ResultStore(tmp_path).write_run(bad, [])


def test_unwritable_store_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        ResultStore(blocker / "store").ensure_writable()


def test_corrupt_file_is_named(tmp_path):
    (tmp_path / "r1.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(StoreError, match="r1.parquet is not readable Parquet"):
        ResultStore(tmp_path).read()


VALIDATION = dict(val_clean_acc=0.45, val_pgd_adv_acc=0.15, val_ood_accuracy=0.25, val_images=300,
                  val_pgd_images=100, val_ood_images=450)


def test_validation_metrics_round_trip_and_reach_tune_and_mlflow(tmp_path):
    store = ResultStore(tmp_path)
    store.write_run("r1", [record(step=0, **VALIDATION)])
    [back] = store.read_run("r1")
    assert {name: getattr(back, name) for name in VALIDATION} == VALIDATION
    assert isinstance(back.val_images, int) and pq.read_schema(tmp_path / "r1.parquet").field("val_images").type == "int64"
    logged = back.metrics()
    assert (logged["val_clean_acc"], logged["val_pgd_adv_acc"], logged["val_ood_accuracy"]) == (0.45, 0.15, 0.25)
    assert "val_images" not in logged  # counts are bookkeeping, as test_images


def test_results_without_validation_read_as_none_beside_results_with_it(tmp_path):
    store = ResultStore(tmp_path)
    store.write_run("old", [record("old")])
    table = pq.read_table(tmp_path / "old.parquet")
    pq.write_table(table.drop_columns([n for n in table.column_names if n.startswith("val_")]),
                   tmp_path / "old.parquet")  # as written before the validation fields existed
    store.write_run("new", [record("new", **VALIDATION)])
    [old] = store.read_run("old")
    assert all(getattr(old, name) is None for name in VALIDATION)
    assert not any(key.startswith("val_") for key in old.metrics())  # not measured: not logged as a number
    table = store.read()
    assert table.column("val_clean_acc").to_pylist() == [0.45, None]
    assert table.column("val_pgd_images").to_pylist() == [100, None]


def test_which_head_a_run_started_from_is_in_its_files_metadata(tmp_path):
    store = ResultStore(tmp_path)
    store.write_run("r1", [record()], ["a", "b"], head_init="fresh")
    store.write_run("r2", [record("r2")], None, head_init="pretrained")
    store.write_run("r3", [record("r3")])  # as written before it was kept
    assert (store.head_init("r1"), store.class_names("r1")) == ("fresh", ["a", "b"])
    assert (store.head_init("r2"), store.class_names("r2")) == ("pretrained", None)
    assert store.head_init("r3") is None and store.head_init("absent") is None
