"""Reliability and security (issue 6): faults injected, bad input thrown, concurrent writers, nothing lost.

RELIABILITY.md lists every fault and bad input tried here with the test that proves it. The Ray tests use the
installed package's trainables (`rft_ray.sweep.trial`) and a tiny run (random-init 16px ViT on digits).
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import cli_error, tiny_run
from fault_plugins import fault_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft_ray.config import SpecError
from rft_ray.config.experiment import ExperimentSpec
from rft_ray.data import DataError
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore, StoreError, StoreWriteError
from rft_ray.specs import experiment_spec, load_experiment, load_run_spec, run_spec

ROOT = Path(__file__).resolve().parents[1]


def record(run_id: str, step: int, total: int = 60, **kw) -> EvalRecord:
    base = dict(run_id=run_id, strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                step=step, total_steps=total, epoch=step / 100, examples_seen=step * 16, train_loss=0.5,
                train_clean_acc=0.5, test_clean_acc=0.4 + step / 1000, pgd_adv_acc=0.2, pgd_eps=1 / 255,
                test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5,
                ood_acc={"contrast": 0.3}, val_clean_acc=0.35 + step / 1000, val_pgd_adv_acc=0.25)
    base.update(kw)
    return EvalRecord(**base)


def steps_by_run(store_root) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for row in ResultStore(store_root).read().to_pylist():
        out.setdefault(row["run_id"], []).append(row["step"])
    return out


def _written(data, path: str) -> bool:
    """Whether the spec path (`training.lr`, `strategies[0].options.r`) leads to a value in `data`; keys may
    hold dots or brackets themselves (generated keys do)."""
    if not path:
        return True
    if isinstance(data, dict):
        return any(path.startswith(str(key)) and path[len(str(key)):][:1] in ("", ".", "[")
                   and _written(value, path[len(str(key)):].removeprefix(".")) for key, value in data.items())
    index = re.match(r"\[(\d+)\]", path)
    return (isinstance(data, list) and index is not None and int(index.group(1)) < len(data)
            and _written(data[int(index.group(1))], path[index.end():].removeprefix(".")))


def assert_names_a_field_of(data, err: SpecError) -> None:
    """The error names the field it is about: a path to what the spec wrote there, or to the section that
    lacks a required key (`model.weights` under a `model` without one), and says what is wrong after it."""
    path = err.field_path
    parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
    assert path and (_written(data, path) or (parent != path and _written(data, parent))), (path, data)
    assert err.reason and str(err) == f"{path}: {err.reason}", str(err)


# ---------------------------------------------------------------------------------------------------
# Bad input: generated specs (hypothesis) never get anything but a SpecError naming the field


def _field_names(cls) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**1000), 2**63, -1, 0, 1, 255, 10**7 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1/255", "-1/255", "1/0", "0/0", "1e400", "nan", "inf", "auto", "default", "paper_code",
                     "cpu", "cuda", "lora", "full", "digits", "parquet", "../../etc/passwd", "~/x", "\x00", "é",
                     "1" * 5000, "s3://bucket/x", "2020-01-01"]),
    st.text(max_size=12),
)
ANY = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                   max_leaves=12)


def section(cls, depth: int = 0):
    """A dict shaped like the dataclass `cls`: its own keys (and some unknown ones), values of any type, and
    nested sections shaped like their dataclasses."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        nested = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if nested and depth < 3:
            values[f.name] = st.one_of(section(nested[0], depth + 1), ANY)
        elif typing.get_origin(tp) is list and any(dataclasses.is_dataclass(a) for a in typing.get_args(tp)):
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)][0]
            values[f.name] = st.one_of(st.lists(section(inner, depth + 1), max_size=3), ANY)
        else:
            values[f.name] = ANY
    known = st.fixed_dictionaries({}, optional=values)
    extra = st.dictionaries(st.sampled_from(["unknown", "lrr", "Training", "1"]), ANY, max_size=1)
    return st.builds(lambda a, b: {**a, **b}, known, extra)


def _run_spec_dicts():
    from rft_ray.config import (
        DatasetSpec,
        EvaluationSpec,
        ModelSpec,
        OutputSpec,
        TrainingSpec,
    )
    from rft_ray.data import dataset_names
    from rft_ray.models.strategies import strategy_names

    strategy = st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(strategy_names()), ANY),
        "options": st.one_of(st.dictionaries(st.sampled_from(["r", "alpha", "dropout", "targets", "feedforward",
                                                              "reduction_factor", "phm_dim", "activation", "x"]),
                                             ANY, max_size=3), ANY)})
    dataset = st.builds(lambda d, name: {**d, **({"name": name} if name else {})}, section(DatasetSpec),
                        st.one_of(st.none(), st.sampled_from(dataset_names())))
    return st.fixed_dictionaries({}, optional={
        "model": section(ModelSpec), "strategy": strategy, "dataset": dataset, "training": section(TrainingSpec),
        "evaluation": section(EvaluationSpec), "output": section(OutputSpec), "extra": ANY})


@settings(max_examples=int(os.environ.get("RFT_HYPOTHESIS_EXAMPLES", 120)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=_run_spec_dicts())
def test_prop_generated_run_specs_get_a_spec_error_or_a_valid_spec(data):
    try:
        spec = run_spec(data)
    except SpecError as err:
        assert_names_a_field_of(data, err)
        return
    assert run_spec(spec.to_dict()) == spec  # a valid spec survives its own round trip


def _experiment_dicts():
    from rft_ray.config.experiment import (
        FailureSpec,
        ResourcesSpec,
        SearchSpec,
        StorageSpec,
        TrackingSpec,
    )

    base = _run_spec_dicts().map(lambda d: {k: v for k, v in d.items() if k not in ("strategy", "output")})
    strategies = st.lists(st.one_of(st.sampled_from(["lora", "full", "bitfit", "lorra"]),
                                    st.fixed_dictionaries({"name": st.sampled_from(["lora", "ia3"])},
                                                          optional={"options": ANY, "space": ANY, "grid": ANY,
                                                                    "points_to_evaluate": ANY}), ANY), max_size=3)
    return st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["tiny", "a b", "../x", ""]), ANY), "base": st.one_of(base, ANY),
        "strategies": st.one_of(strategies, ANY), "datasets": st.one_of(st.lists(ANY, max_size=2), ANY),
        "search": section(SearchSpec), "resources": section(ResourcesSpec), "tracking": section(TrackingSpec),
        "storage": section(StorageSpec), "failure": section(FailureSpec)})


@settings(max_examples=int(os.environ.get("RFT_HYPOTHESIS_EXAMPLES", 80)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=_experiment_dicts())
def test_prop_generated_experiment_specs_get_a_spec_error_or_a_valid_spec(data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            experiment = experiment_spec(data)
        except SpecError as err:
            assert_names_a_field_of(data, err)
            return
        again = experiment_spec(experiment.to_dict())
    # One group per strategy x dataset, in the spec's order, each its own Tune experiment (a unique name).
    per_strategy = 1 if experiment.datasets is None else len(experiment.datasets)
    assert [g.strategy for g in experiment.groups] == [s.name for s in experiment.strategies for _ in
                                                       range(per_strategy)]
    assert len({g.name for g in experiment.groups}) == len(experiment.groups)
    # A valid spec survives its own round trip with the same groups and fingerprint (a resume accepts it).
    assert [g.name for g in again.groups] == [g.name for g in experiment.groups]
    assert re.fullmatch(r"[0-9a-f]{16}", experiment.fingerprint()) and again.fingerprint() == experiment.fingerprint()


# ---------------------------------------------------------------------------------------------------
# Bad input: adversarial YAML files


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize("text, needles", [
    (b"training:\n  lr: \xff\xfe\n", ["not UTF-8"]),
    ("training:\n  seed: " + "9" * 5000 + "\n", ["cannot be read as a spec"]),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", ["spec.yaml"]),
    (BILLION_LAUGHS, ["more than 100000 values"]),
    ("training: {seed: 2020-01-01}\n", ["training.seed: must be a whole number, got '2020-01-01'"]),
    ("model: {name: !!binary aGVsbG8=}\n", ["model.name", "bytes"]),
    ("training: !!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
    ("training: {lr: 1.0e400}\n", ["training.lr: must be a finite number"]),
    ("training: {steps: " + "1" * 100 + "}\n", ["training.steps: is out of range, got an integer of 100 digits"]),
    ("training: {steps: 123456789012}\n", ["training.steps: must be in [1, 10000000]"]),
    ("training: {steps: 1.0e+300}\n", ["training.steps: must be a whole number"]),
    ("evaluation: {pgd: {eps: -1/255}}\n", ["evaluation.pgd.eps: must be in (0, 1]"]),
    ("evaluation: {pgd: {eps: 1/0}}\n", ["evaluation.pgd.eps: must be a finite number"]),
    ("trianing: {steps: 5}\n", ["unknown key 'trianing'", "Did you mean 'training'"]),
    ("- just\n- a list\n", ["must be a mapping"]),
    ("training: {lr: [1, 2]}\n", ["training.lr: must be a finite number"]),
    ("{1: 2}\n", ["unknown key 1"]),
])
def test_adversarial_run_spec_files_get_one_clear_error(tmp_path, text, needles):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.time()
    with pytest.raises(SpecError) as info:
        load_run_spec(path)
    message = str(info.value)
    assert "spec.yaml" in message  # names the file
    for needle in needles:
        assert needle in message, message
    assert time.time() - started < 10  # a YAML bomb fails fast, it does not expand


@pytest.mark.parametrize("data, needles", [
    ({"base": {"training": {"seed": "x"}}}, ["base.training.seed: must be a whole number"]),
    ({"strategies": ["lora"], "search": {"space": {"lr": {"low": -1}}}}, ["search.space.lr.low"]),
    ({"search": {"num_samples": 10**400}}, ["search.num_samples: is out of range"]),
    ({"base": {"dataset": {"name": "cifar10"}}, "resources": {"cpus_per_trial": -2}}, ["resources.cpus_per_trial"]),
    ({"datasets": [{"name": "parquet", "options": {"trian": "x.parquet"}}]}, ["datasets[0].options.trian"]),
    ({"base": {"evaluation": {"pgd": {"eps": "-4/255"}}}}, ["base.evaluation.pgd.eps: must be in (0, 1]"]),
    ({"storage": {"path": ["not", "a", "path"]}}, ["storage.path: must be a string"]),
    ({"name": "../escape"}, ["name: use 1-100 letters"]),
])
def test_adversarial_experiment_specs_name_the_field(tmp_path, data, needles):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    for needle in [*needles, "sweep.yaml"]:
        assert needle in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------------
# Bad input: data (missing datasets, paths escaping the data root, truncated images, wrong schemas, empty classes)


def test_missing_dataset_files_name_the_field_and_the_path(tmp_path, capsys):
    from rft_ray.cli import main

    missing = tmp_path / "nowhere" / "train.parquet"
    code = main(["run", "--dataset", "parquet", "--set", f"dataset.options.train={missing}", "--quiet",
                 "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "c")])
    err = capsys.readouterr().err
    message = cli_error(err)
    assert code == 2 and str(missing) in message and "dataset.options.train" in message
    assert not (tmp_path / "c").exists()  # nothing trained


def test_missing_sweep_data_fails_before_ray_starts(tmp_path, capsys):
    from rft_ray.cli import main

    missing = tmp_path / "no-such" / "train.parquet"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "storage": {"path": str(tmp_path / "sweep")},
                                    "tracking": {"enabled": False},
                                    "datasets": [{"name": "parquet", "options": {"train": str(missing)}}]}))
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err
    message = cli_error(err)
    assert "dataset.options.train" in message and str(missing) in message and "lora-parquet" in message
    import ray

    assert not ray.is_initialized()


def test_list_files_cannot_point_outside_the_data_root(tmp_path):
    from test_datasets import bundle, cub_tree, dogs_tree, domain_folder

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not yours")
    root, _ = cub_tree(tmp_path / "cub")
    listing = root / "CUB_200_2011" / "images.txt"
    lines = listing.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " ../../../secret.jpg"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        bundle("cub200", root)
    assert "../../../secret.jpg" in str(info.value) and str(listing) in str(info.value) and "outside" in str(info.value)

    lines[0] = lines[0].split()[0] + f" {secret}"  # an absolute path
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="outside"):
        bundle("cub200", root)

    dn = tmp_path / "dn"
    domain_folder(dn, "real", split_files=True)
    domain_folder(dn, "sketch", split_files=True)
    split = dn / "real_train.txt"
    split.write_text(split.read_text() + "real/apple/../../../secret.jpg 1\n")
    with pytest.raises(DataError) as info:
        bundle("domainnet", dn, options={"domain": "real"})
    assert "real/apple/../../../secret.jpg" in str(info.value) and str(split) in str(info.value)

    from scipy.io import savemat

    dogs, _ = dogs_tree(tmp_path / "dogs")
    entries = np.empty((1, 1), dtype=object)
    entries[0, 0] = np.array(["n02085620-Chihuahua/../../../secret.jpg"])
    savemat(str(dogs / "test_list.mat"), {"file_list": entries})
    with pytest.raises(DataError) as info:
        bundle("stanford_dogs", dogs)
    assert "secret.jpg" in str(info.value) and "test_list.mat" in str(info.value)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_files_name_the_file(tmp_path, ext):
    from test_datasets import bundle, folder_splits, write_image

    root = folder_splits(tmp_path)
    bad = write_image(root / "train" / "bee" / f"cut{ext}", np.random.default_rng(0), side=64)
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # a download cut short
    with pytest.raises(DataError) as info:  # the folder is read, every image decoded once, before any training
        bundle("caltech256", root, val_fraction=0.0)
    assert str(bad) in str(info.value) and "1 of 16 image files cannot be read" in str(info.value)


def test_truncated_image_bytes_in_parquet_name_file_and_row(tmp_path):
    from test_datasets import balanced, bundle, write_parquet

    path = write_parquet(tmp_path / "t.parquet", balanced(2, 6), class_names=["a", "b"])
    table = pq.read_table(path)
    images = table.column("image").combine_chunks()
    data = images.field("bytes").to_pylist()
    data[3] = data[3][: len(data[3]) // 2]
    fixed = pa.StructArray.from_arrays([pa.array(data, pa.binary()), images.field("path")], names=["bytes", "path"])
    pq.write_table(table.set_column(0, "image", fixed).replace_schema_metadata(table.schema.metadata), path)
    b = bundle("parquet", options={"train": str(path)}, val_fraction=0.0)
    with pytest.raises(DataError) as info:
        for split in (b.train, b.test):
            split.materialize()
    assert str(path) in str(info.value) and "row 3" in str(info.value)


def test_dataset_parquet_with_a_wrong_schema_names_file_and_column(tmp_path):
    from test_datasets import bundle

    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"image": pa.array(["not bytes"]), "label": pa.array(["seven"])}), path)
    with pytest.raises(DataError) as info:
        bundle("parquet", options={"train": str(path)})
    assert str(path) in str(info.value) and "'image'" in str(info.value) and "dataset.options.train" in str(info.value)


def test_empty_classes_are_named(tmp_path):
    from test_datasets import bundle, write_parquet

    path = write_parquet(tmp_path / "e.parquet", [0] * 6 + [2] * 6, class_names=["ant", "bee", "cat"])
    with pytest.raises(DataError) as info:
        bundle("parquet", options={"train": str(path)})
    assert "no images of 1 class(es): bee" in str(info.value)


def test_result_file_with_a_wrong_schema_is_named_and_analyze_says_so(tmp_path, capsys):
    store = ResultStore(tmp_path / "store")
    store.write_run("good", [record("good", 0), record("good", 20)])
    pq.write_table(pa.table({"run_id": ["x"], "step": ["zero"]}), tmp_path / "store" / "foreign.parquet")
    with pytest.raises(StoreError) as info:
        store.read()
    message = str(info.value)
    assert "foreign.parquet" in message and "column 'step' is string, not integer" in message
    assert "no column 'strategy'" in message
    with pytest.raises(StoreError, match="foreign.parquet"):
        store.read_run("foreign")
    assert [r.step for r in store.read_run("good")] == [0, 20]  # the good file still reads

    from rft_ray.cli import main

    assert main(["analyze", str(tmp_path / "store"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "foreign.parquet" in cli_error(err)


# ---------------------------------------------------------------------------------------------------
# Result path unwritable, disk full


def test_unwritable_result_path_fails_before_training(tmp_path, capsys):
    from rft_ray.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.time()
    code = main(["run", "--steps", "20", "--quiet", "--model-source", "random", "--results", str(blocker / "store"),
                 "--checkpoints", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    message = cli_error(err)
    assert code == 2 and "not writable" in message and str(blocker / "store") in message
    assert not (tmp_path / "ckpt").exists()  # no checkpoint: it never trained

    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "storage": {"path": str(blocker / "sweep")},
                                    "tracking": {"enabled": False}}))
    code = main(["sweep", str(spec)])
    err = capsys.readouterr().err
    assert code == 2 and str(blocker) in cli_error(err)
    import ray

    assert not ray.is_initialized()  # it failed before starting Ray
    assert time.time() - started < 60


def _partial_writer(real, fail_on):
    calls = {"n": 0}

    def write_table(table, where, *args, **kwargs):
        if not isinstance(where, (str, os.PathLike)):  # an in-memory buffer (the per-image verdicts'), not the disk
            return real(table, where, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] != fail_on:
            return real(table, where, *args, **kwargs)
        real(table, where, *args, **kwargs)
        with open(where, "r+b") as handle:  # the disk filled up half-way through this file
            handle.truncate(os.path.getsize(where) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write_table


def test_disk_full_mid_write_leaves_no_partial_file_and_readers_work(tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "store")
    store.write_run("r1", [record("r1", 0), record("r1", 20)])
    store.write_run("r2", [record("r2", 0)])
    monkeypatch.setattr(pq, "write_table", _partial_writer(pq.write_table, fail_on=1))
    with pytest.raises(StoreWriteError) as info:
        store.write_run("r1", [record("r1", 0), record("r1", 20), record("r1", 40)])
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert "r1.parquet" in str(info.value) and "No space left" in str(info.value)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "store")) == ["r1.parquet", "r2.parquet"]  # no half-written temporary
    assert steps_by_run(tmp_path / "store") == {"r1": [0, 20], "r2": [0]}  # the previous version, whole

    from analysis.report import analyze

    analyze(str(tmp_path / "store"), str(tmp_path / "analysis"))  # readers downstream still work


def test_disk_full_during_a_run_fails_cleanly_and_the_rerun_completes_each_point_once(tmp_path, monkeypatch,
                                                                                     capsys):
    from rft_ray.cli import main

    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(tiny_run(tmp_path)))
    monkeypatch.setattr(pq, "write_table", _partial_writer(pq.write_table, fail_on=3))  # the step-40 point
    assert main(["run", "--spec", str(spec), "--quiet"]) == 2
    err = capsys.readouterr().err
    message = cli_error(err)
    assert "No space left on device" in message and "previous version" in message
    run_id = run_spec(tiny_run(tmp_path)).run_id
    assert steps_by_run(tmp_path / "store") == {run_id: [0, 20]}
    assert not [p for p in os.listdir(tmp_path / "store") if p.startswith(".")]
    monkeypatch.undo()
    assert main(["run", "--spec", str(spec), "--quiet"]) == 0  # space again: resumes from its checkpoint
    assert steps_by_run(tmp_path / "store") == {run_id: [0, 20, 40, 60]}


# ---------------------------------------------------------------------------------------------------
# Concurrent writers


_WRITER = """
import sys, time
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore
root, run_id, points, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = ResultStore(root)
base = dict(strategy="lora", dataset="digits", model=tag, lr=1e-3, weight_decay=0.0, seed=0, total_steps=points - 1,
            epoch=0.0, examples_seen=0, train_loss=0.5, train_clean_acc=0.5, pgd_adv_acc=0.2, pgd_eps=0.004,
            test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5)
records = []
for step in range(points):
    records.append(EvalRecord(run_id=run_id, step=step, test_clean_acc=step / points,
                              ood_acc={"d%d" % (step % 3): 0.1}, **base))
    store.write_run(run_id, records)
"""


def test_concurrent_writers_lose_no_rows_and_readers_never_see_a_partial_file(tmp_path):
    """Eight processes write their runs' files at once (each rewriting its file at every point, as trials do),
    two of them the same run id (a zombie worker and its restart). A reader reads the whole store in a loop
    meanwhile: every read succeeds, and every run it sees is a whole prefix of its points."""
    root = tmp_path / "store"
    points = 40
    runs = [f"run{i}" for i in range(7)]
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(root), run_id, str(points), f"w{i}"])
             for i, run_id in enumerate(runs)]
    procs.append(subprocess.Popen([sys.executable, str(script), str(root), runs[0], str(points), "twin"]))
    reads, seen = 0, set()
    store = ResultStore(root)
    while any(p.poll() is None for p in procs) or reads == 0:
        table = store.read() if root.exists() else pa.table({})
        reads += 1
        for run_id, steps in _steps(table).items():
            assert steps == list(range(len(steps))), (run_id, steps)  # whole prefixes: no torn or lost rows
            seen.add(len(steps))
    assert all(p.wait() == 0 for p in procs)
    final = steps_by_run(root)
    assert sorted(final) == runs and all(steps == list(range(points)) for steps in final.values())
    assert not [p for p in os.listdir(root) if p.startswith(".")]  # no temporaries left behind
    assert reads > 5 and len(seen) > 3  # the reader really read while they wrote
    models: dict[str, set] = {}
    for row in store.read().to_pylist():
        models.setdefault(row["run_id"], set()).add(row["model"])
    assert models[runs[0]] in ({"w0"}, {"twin"})  # one writer's file, whole, never a mix of two


def _steps(table: pa.Table) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    if table.num_rows:
        for run_id, step in zip(table.column("run_id").to_pylist(), table.column("step").to_pylist()):
            out.setdefault(run_id, []).append(step)
    return out


# ---------------------------------------------------------------------------------------------------
# Security


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))  # what a malicious file would do: run code on load


def test_malicious_pickles_in_checkpoints_and_weight_files_are_refused(tmp_path, capsys):
    import torch

    from rft_ray.models.backbones import BackboneError, read_weight_file
    from rft_ray.training.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint

    marker = tmp_path / "code-ran"
    for name in ("evil.pth", "evil.pt", "evil.bin"):
        torch.save({"weight": _Exploit(marker)}, tmp_path / name)
        with pytest.raises(BackboneError, match=f"cannot read weight file '{re.escape(str(tmp_path / name))}'"):
            read_weight_file(tmp_path / name)
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(_Exploit(marker)))
    evil = re.escape(str(tmp_path / "evil.safetensors"))
    with pytest.raises(BackboneError, match=f"cannot read weight file '{evil}'"):
        read_weight_file(tmp_path / "evil.safetensors")

    spec = run_spec(tiny_run(tmp_path))
    checkpoints = tmp_path / "ckpt" / spec.run_id
    checkpoints.mkdir(parents=True)
    torch.save({"step": 20, "records": _Exploit(marker)}, checkpoints / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(checkpoints / CHECKPOINT_FILE))} cannot "
                                              "be read .*could run code") as info:
        load_checkpoint(checkpoints, spec)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)  # refused by weights_only, not some other fault
    assert not marker.exists()  # nothing ran


def test_no_code_loads_untrusted_files_with_pickle():
    """Every torch.load passes weights_only=True; no pickle.load / yaml.load / np.load(allow_pickle) anywhere."""
    unsafe = []
    for path in [*ROOT.glob("rft_ray/**/*.py"), *ROOT.glob("analysis/**/*.py"), *ROOT.glob("experiments/*.py")]:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                unsafe.append(f"{path.name}: {match.group(0)}")
        for pattern in (r"pickle\.loads?\(", r"cloudpickle\.loads?\(", r"yaml\.load\(", r"yaml\.unsafe_load",
                        r"allow_pickle\s*=\s*True", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"shell\s*=\s*True"):
            unsafe += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not unsafe, unsafe


KEY_LIKE = [
    (r"AKIA[0-9A-Z]{16}", "an AWS access key id"),
    (r"(?i)aws_secret_access_key|aws_access_key_id|aws_session_token", "AWS credentials"),
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
    (r"\b(ghp|gho|github_pat|xox[abpr]|hf|sk|glpat)_[A-Za-z0-9_]{16,}", "an API token"),
    (r"(?i)\b(password|passwd|secret|token|api_key|apikey)\s*[:=]\s*['\"]?[^\s'\"#]{6,}", "a password or secret"),
    (r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", "a 40-character secret (AWS secret key shape)"),
    (r"://[^/\s:@]+:[^/\s@]+@", "credentials in a URL"),
]


def test_cluster_yaml_and_shipped_specs_hold_no_secrets():
    files = [ROOT / "cluster.yaml", *ROOT.glob("experiments/*.yaml"), *ROOT.glob("rft_ray/experiments/*.yaml")]
    assert ROOT / "cluster.yaml" in files
    found = []
    for path in files:
        text = path.read_text()
        for pattern, what in KEY_LIKE:
            found += [f"{path.name}: {what}: {m.group(0)[:12]}..." for m in re.finditer(pattern, text)]
    assert not found, found
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    auth = config.get("auth", {})
    assert set(auth) <= {"ssh_user", "ssh_private_key"}  # a key file path at most, never key material
    assert all(n.get("node_config", {}).get("IamInstanceProfile") is None or "Arn" in n["node_config"]["IamInstanceProfile"]
               or "Name" in n["node_config"]["IamInstanceProfile"] for n in config["available_node_types"].values())
    for pattern, _ in KEY_LIKE[:4]:  # the scanner itself works
        sample = {"AKIA": "AKIAABCDEFGHIJKLMNOP", "(?i)": "aws_secret_access_key",
                  "-----": "-----BEGIN RSA PRIVATE KEY-----", r"\b(": "ghp_abcdefghijklmnopqrstuvwxyz"}
        assert any(re.search(pattern, s) for s in sample.values())


def test_dashboards_bind_to_localhost_unless_told(tmp_path, capsys, monkeypatch):
    from rft_ray.cli import main

    (tmp_path / "mlflow.db").write_bytes(b"")
    assert main(["ui", "--results", str(tmp_path), "--print-command"]) == 0
    out, err = capsys.readouterr()
    assert "--host 127.0.0.1" in out and not err
    assert main(["ui", "--results", str(tmp_path), "--print-command", "--host", "0.0.0.0"]) == 0
    out, err = capsys.readouterr()
    assert "--host 0.0.0.0" in out and "warning" in err and "ssh -L" in err

    import ray

    from rft_ray.sweep.resources import ensure_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    assert ensure_ray(None) is True
    assert seen["dashboard_host"] == "127.0.0.1"
    cluster = (ROOT / "cluster.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in cluster and "0.0.0.0" not in cluster
    guide = (ROOT / "docs" / "guides" / "aws.md").read_text()
    assert re.search(r"ssh .*-L 8265:127\.0\.0\.1:8265", guide) and "ray dashboard cluster.yaml" in guide


# ---------------------------------------------------------------------------------------------------
# `rft sync-mlflow`: back-fill MLflow from the store (no Ray)


def _sweep_folder(tmp_path: Path) -> tuple[Path, ExperimentSpec]:
    """A finished two-trial sweep whose MLflow tracking went away after the first child's step 20."""
    from rft_ray.sweep.results import GroupResult, TrialSummary
    from rft_ray.sweep.state import SweepFolder

    data = {"name": "synced", "base": {"training": {"steps": 60}, "evaluation": {"schedule": [{"until": None,
                                                                                             "every": 20}]}},
            "search": {"num_samples": 2, "objectives": [{"metric": "test_clean_acc"},
                                                         {"metric": "pgd_adv_acc", "reduce": "best"}]},
            "storage": {"path": str(tmp_path / "sweep")}}
    experiment = experiment_spec(data)
    store = ResultStore(experiment.store_root)
    store.write_run("lora-digits-a1", [record("lora-digits-a1", s) for s in (0, 20, 40, 60)])
    store.write_run("lora-digits-b2", [record("lora-digits-b2", s, lr=3e-3) for s in (0, 20)])  # diverged
    trials = [TrialSummary("a1", "lora-digits-a1", 1e-3, 0.0, "completed", 60, 60, {}),
              TrialSummary("b2", "lora-digits-b2", 3e-3, 0.0, "error", 20, 60, {}, error="TrainingDiverged: nan")]
    group = GroupResult("lora-digits", "lora", "digits", "errors", trials, [])
    SweepFolder(experiment.storage_root).write_state({
        "name": "synced", "fingerprint": experiment.fingerprint(), "spec": experiment.to_dict(),
        "groups": {"lora-digits": group.to_dict()}, "parent_run_id": None, "finished": "now"})
    return Path(experiment.storage_root), experiment


def _mlflow_steps(uri: str, name: str) -> dict[str, dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            out["parent"] = {"status": run.info.status}
            continue
        histories = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
                     for key in ("test_clean_acc", "best/val_pgd_adv_acc", "ood_acc/contrast")}
        out[run.data.tags["run_id"]] = {"status": run.info.status, "steps": histories, "params": run.data.params,
                                        "tags": run.data.tags}
    return out


def test_sync_mlflow_backfills_the_store_into_mlflow_once(tmp_path, capsys):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from rft_ray.cli import main

    folder, experiment = _sweep_folder(tmp_path)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # What the live callback had logged before MLflow went away: the parent, one child with steps 0 and 20.
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("synced")
    parent = client.create_run(exp_id, run_name="synced", tags={"sweep": "synced",
                                                                "fingerprint": experiment.fingerprint()})
    child = client.create_run(exp_id, run_name="lora-digits-a1", tags={
        "mlflow.parentRunId": parent.info.run_id, "run_id": "lora-digits-a1", "trial_id": "a1"})
    for step in (0, 20):
        client.log_batch(child.info.run_id, metrics=[Metric("test_clean_acc", 0.5, 0, step)])

    assert main(["sync-mlflow", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "created 1 run(s)" in out and "logged 4 missing evaluation point(s)" in out
    runs = _mlflow_steps(uri, "synced")
    assert runs["parent"]["status"] == "FINISHED"
    assert runs["lora-digits-a1"]["steps"]["test_clean_acc"] == [0, 20, 40, 60]  # each point once
    assert runs["lora-digits-a1"]["status"] == "FINISHED"
    b2 = runs["lora-digits-b2"]
    assert b2["steps"] == {"test_clean_acc": [0, 20], "best/val_pgd_adv_acc": [0, 20], "ood_acc/contrast": [0, 20]}
    assert b2["status"] == "FAILED" and b2["tags"]["outcome"] == "error" and "nan" in b2["tags"]["error"]
    assert float(b2["params"]["lr"]) == 3e-3 and b2["params"]["strategy.r"] == "8"
    assert b2["tags"]["strategy"] == "lora" and b2["tags"]["trainable_params"] == "10"

    assert main(["sync-mlflow", str(folder)]) == 0  # idempotent
    assert "created 0 run(s), logged 0 missing evaluation point(s), ended 0 run(s)" in capsys.readouterr().out
    assert _mlflow_steps(uri, "synced") == runs

    assert main(["sync-mlflow", str(folder), "--mlflow-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "not reachable" in cli_error(err)
    assert main(["sync-mlflow", str(tmp_path / "nothing")]) == 2
    assert "no sweep.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# With Ray: a diverging trial and MLflow going away mid-sweep, in one sweep


@pytest.fixture(scope="module")
def ray_faults(tmp_path_factory):
    import ray

    faults = tmp_path_factory.mktemp("faults")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": fault_env(faults)})
    yield faults
    ray.shutdown()


def _tiny_sweep(path: Path, **top) -> dict:
    from test_sweep import tiny_experiment

    data = tiny_experiment(path, **top)
    data["base"]["training"]["steps"] = 60
    return data


def test_nan_loss_and_mlflow_lost_mid_sweep_lose_nothing(ray_faults, tmp_path, monkeypatch, capsys):
    """Two trials at once. One's loss turns NaN at step 30: it ends errored with that reason, its points 0 and
    20 kept, not retried; the other completes. MLflow goes away after a few calls: one warning, the sweep goes
    on, the store is complete, and `rft sync-mlflow` back-fills MLflow afterwards, each point once."""
    from fault_plugins import NAN_FILE, NAN_FIRED_FILE
    from mlflow.tracking import MlflowClient

    from rft_ray.cli import main
    from rft_ray.sweep.driver import run_sweep
    from rft_ray.sweep.trial import DIVERGED_FILE

    data = _tiny_sweep(tmp_path / "sweep", tracking={"enabled": True, "experiment_name": "faults"},
                       search={"mode": "grid", "grid": {"lr": [1e-3, 3e-3], "weight_decay": [0.0]},
                               "objectives": [{"metric": "test_clean_acc"}]})
    experiment = experiment_spec(data)
    (ray_faults / NAN_FILE).write_text(json.dumps({"step": 30, "run_id_contains": "lora-digits"}))

    calls = {"n": 0}
    real_log_batch = MlflowClient.log_batch

    def going_away(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # the parent's params, the children's params, a point or two: then the server is gone
            raise ConnectionError("Connection refused: the MLflow server went away")
        return real_log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", going_away)
    result = run_sweep(experiment, analyze=False)
    monkeypatch.undo()
    err = capsys.readouterr().err

    fired = json.loads((ray_faults / NAN_FIRED_FILE).read_text())
    [group] = result.groups
    by_run = {t.run_id: t for t in group.trials}
    diverged = by_run[fired["run_id"]]
    healthy = [t for t in group.trials if t.run_id != fired["run_id"]]
    assert group.status == "errors" and len(group.trials) == 2
    assert diverged.status == "error" and "TrainingDiverged" in diverged.error
    assert "loss became nan at step 30" in diverged.error
    assert f"trial {diverged.trial_id}" in err and "loss became nan" in err
    assert [t.status for t in healthy] == ["completed"]
    # The store: the diverged run's points before the NaN, each once; the other run's whole schedule, each once.
    runs = steps_by_run(experiment.store_root)
    assert runs == {diverged.run_id: [0, 20], healthy[0].run_id: [0, 20, 40, 60]}
    # Not retried: it diverged once, and Tune heard of its two points once each.
    assert (Path(experiment.storage_root) / "train" / diverged.run_id / DIVERGED_FILE).is_file()
    reported = [json.loads(line)["step"] for file in Path(experiment.storage_root, "tune").glob(
        f"lora-digits/*{diverged.trial_id}*/result.json") for line in file.read_text().splitlines() if line.strip()]
    assert reported == [0, 20]
    # MLflow went away: one warning, then the back-fill puts every point of the store into MLflow, once.
    assert err.count("MLflow tracking at") == 1 and "rft sync-mlflow" in err
    assert main(["sync-mlflow", experiment.storage_root]) == 0
    mlflow_runs = _mlflow_steps(experiment.tracking_uri(), "faults")
    for run_id, steps in runs.items():
        assert mlflow_runs[run_id]["steps"]["test_clean_acc"] == steps
    assert mlflow_runs[diverged.run_id]["status"] == "FAILED"
    assert mlflow_runs[healthy[0].run_id]["status"] == "FINISHED" and mlflow_runs["parent"]["status"] == "FINISHED"
    assert main(["sync-mlflow", experiment.storage_root]) == 0
    assert "logged 0 missing" in capsys.readouterr().out
    assert _mlflow_steps(experiment.tracking_uri(), "faults") == mlflow_runs


# ---------------------------------------------------------------------------------------------------
# With Ray (slow): a worker node of a local two-node cluster removed mid-sweep


@pytest.mark.slow
def test_worker_node_removed_mid_sweep_loses_nothing(tmp_path):
    """A head and a worker node, one CPU each, two trials at once (one per node). When the worker node's trial
    has reported its first points, the node is removed (its raylet and every process on it killed, as when a
    spot instance is reclaimed). The trial resumes from its last checkpoint on the head once it is free; the
    sweep completes and every run's schedule is in the store exactly once."""
    import ray
    from ray.cluster_utils import Cluster

    from rft_ray.sweep.driver import run_sweep

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    data = _tiny_sweep(tmp_path / "sweep", search={"mode": "grid", "grid": {"lr": [1e-3, 3e-3], "weight_decay": [0.0]},
                                                   "objectives": [{"metric": "test_clean_acc"}]},
                       resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 2},
                       failure={"max_failures": 3, "worker_max_failures": 3})
    data["base"]["training"]["steps"] = 400
    experiment = experiment_spec(data)
    schedule = list(range(0, 401, 20))
    removed = {}

    def remove_when_the_worker_node_reports():
        deadline = time.time() + 600
        while time.time() < deadline and not removed:
            for result_file in Path(experiment.storage_root, "tune").glob("*/*/result.json"):
                lines = [json.loads(x) for x in result_file.read_text().splitlines() if x.strip()]
                if any(r.get("node_id") == worker.node_id for r in lines):
                    removed["at"] = steps_by_run(experiment.store_root)
                    removed["trial"] = lines[-1]["trial_id"]
                    cluster.remove_node(worker, allow_graceful=False)
                    return
            time.sleep(0.1)

    import threading

    watcher = threading.Thread(target=remove_when_the_worker_node_reports, daemon=True)
    try:
        ray.init(address=cluster.address)
        watcher.start()
        result = run_sweep(experiment, analyze=False)
        watcher.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the worker node never ran a trial"
    lost_run = f"lora-digits-{removed['trial']}"
    assert len(removed["at"].get(lost_run, [])) < len(schedule)  # removed mid-trial
    [group] = result.groups
    assert group.status == "done" and all(t.status == "completed" and t.step == 400 for t in group.trials)
    runs = steps_by_run(experiment.store_root)
    assert sorted(runs) == sorted(t.run_id for t in group.trials) and lost_run in runs
    for steps in runs.values():
        assert steps == schedule  # each point exactly once, none missing
