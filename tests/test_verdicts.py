"""Per-image verdicts (rft_ray/results/verdicts.py): bit-packed round trip, image identity, the sidecar on a
non-local filesystem, a damaged file named, and two runs of a dataset measured on the same images."""
from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest

from rft_ray.results.store import ResultStore
from rft_ray.results.verdicts import (
    RunVerdicts,
    Subset,
    VerdictError,
    encode,
    read_verdicts,
    verdicts_path,
    write_verdicts,
)


def _verdicts(seed: int = 0, points: int = 3) -> RunVerdicts:
    rng = np.random.default_rng(seed)
    test = Subset.of(np.sort(rng.choice(10_000, 1000, replace=False)), rng.integers(0, 10, 1000))
    pgd = Subset.of(test.indices[:200], np.zeros(200))
    return RunVerdicts(
        points={step: {"test_clean_acc": rng.random(1000) < 0.8, "pgd_adv_acc": rng.random(200) < 0.3,
                       "pgd_adv_acc/2/255": rng.random(200) < 0.1} for step in range(0, 10 * points, 10)},
        metric_subsets={"test_clean_acc": "test", "pgd_adv_acc": "test/pgd", "pgd_adv_acc/2/255": "test/pgd"},
        subsets={"test": test, "test/pgd": pgd})


def test_verdicts_round_trip_bit_for_bit_with_their_image_identity(tmp_path):
    original = _verdicts()
    store = ResultStore(tmp_path)
    store.write_verdicts("r1", original)
    back = ResultStore(tmp_path).read_verdicts("r1")  # a fresh reader: the identities come from their files
    assert sorted(back.points) == [0, 10, 20]
    for step, point in original.points.items():
        for metric, ok in point.items():
            np.testing.assert_array_equal(back.points[step][metric], ok)
    assert back.metric_subsets == original.metric_subsets
    for name, subset in original.subsets.items():
        np.testing.assert_array_equal(back.subsets[name].indices, subset.indices)
        assert back.subsets[name].fingerprint == subset.fingerprint
    assert back.subset_of("pgd_adv_acc/2/255").fingerprint == original.subsets["test/pgd"].fingerprint


def test_bit_packing_keeps_a_point_small():
    """1,400 verdicts a point are 175 bytes packed; the file adds its columns and the identity once per run."""
    one, many = encode(_verdicts(points=1)), encode(_verdicts(points=41))
    per_point = (len(many) - len(one)) / 40
    assert per_point < 400  # packbits: 1000/8 + 2 * 200/8 = 175 bytes of bits, random so incompressible


def test_the_fingerprint_tells_other_images_apart():
    labels = np.arange(5)
    assert Subset.of([1, 2, 3, 4, 5], labels).fingerprint == Subset.of([1, 2, 3, 4, 5], labels).fingerprint
    assert Subset.of([1, 2, 3, 4, 6], labels).fingerprint != Subset.of([1, 2, 3, 4, 5], labels).fingerprint
    assert Subset.of([1, 2, 3, 4, 5], labels + 1).fingerprint != Subset.of([1, 2, 3, 4, 5], labels).fingerprint
    pixels = np.zeros((5, 3, 2, 2), np.uint8)
    assert Subset.of([1, 2, 3, 4, 5], labels, pixels).fingerprint != Subset.of(
        [1, 2, 3, 4, 5], labels, pixels + 1).fingerprint


def test_the_sidecar_lives_on_any_pyarrow_filesystem():
    fs = pafs._MockFileSystem()  # an in-memory filesystem, as an object store is reached
    write_verdicts(fs, "bucket/store", "r1", _verdicts())
    assert fs.get_file_info(verdicts_path("bucket/store", "r1")).type == pafs.FileType.File
    assert sorted(read_verdicts(fs, "bucket/store", "r1").points) == [0, 10, 20]
    assert read_verdicts(fs, "bucket/store", "r2") is None  # a run written before verdicts were kept


def test_a_damaged_sidecar_is_named(tmp_path):
    store = ResultStore(tmp_path)
    store.write_verdicts("r1", _verdicts())
    (tmp_path / "verdicts" / "r1.parquet").write_bytes(b"not parquet")
    with pytest.raises(VerdictError, match=r"verdicts/r1.parquet is not readable"):
        store.read_verdicts("r1")
    assert store.run_ids() == []  # the sidecar folder is not a run


def test_two_runs_of_a_dataset_pair_image_by_image_and_another_split_seed_does_not(tmp_path):
    from conftest import tiny_run

    from rft_ray.specs import run_spec
    from rft_ray.training.runner import run_in_process

    def verdicts(name: str, **over):
        spec = run_spec(tiny_run(tmp_path / name, **{"training.steps": 1, **over}))
        run_in_process(spec, progress=False)
        return ResultStore(spec.output.results).read_verdicts(spec.run_id)

    a, b = verdicts("a"), verdicts("b", **{"training.seed": 1})
    other = verdicts("c", **{"dataset.split_seed": 1})
    assert set(a.subsets) == set(b.subsets) >= {"test", "test/pgd", "val", "val/pgd", "ood/contrast"}
    for name in a.subsets:
        assert a.subsets[name].fingerprint == b.subsets[name].fingerprint  # same images, pairable
    assert a.subsets["test"].fingerprint != other.subsets["test"].fingerprint
    # the PGD subset indexes the test split: its images are among the test subset's
    assert set(a.subsets["test/pgd"].indices) <= set(a.subsets["test"].indices)


def test_real_runs_get_auc_intervals_from_their_verdicts(tmp_path):
    """Two strategies trained here into one store: the analysis pairs their verdicts (float32 records included)."""
    from conftest import tiny_run

    from analysis.report import analyze
    from rft_ray.specs import run_spec
    from rft_ray.training.runner import run_in_process

    for strategy in ("full", "lora"):
        run_in_process(run_spec(tiny_run(tmp_path, **{"strategy.name": strategy, "training.steps": 1})),
                       progress=False)
    data = analyze(str(tmp_path / "store"), tmp_path / "out", figures=False, replicates=200).data
    assert data["auc_intervals"]["unavailable"] == {}
    for row in data["auc"]:
        lo, hi = row["auc_ci"]
        assert 0 <= lo <= hi <= 1
    (pair,) = data["auc_intervals"]["datasets"][0]["pairs"]
    assert {pair["a"], pair["b"]} == {"full", "lora"}
