"""The subsets' identity kept once per store (rft_ray/results/verdict_subsets.py): sidecars name it by fingerprint,
runs, attacks and interpolations share one file per subset, on local and object-store filesystems; earlier
sidecars (identity inline) still read; a missing or conflicting identity file is named; and the identity is on
disk before any sidecar naming it."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rft_ray.results.store import ResultStore, StoreError
from rft_ray.results.verdicts import (
    ATTACK_VERDICTS_DIR,
    SUBSETS_DIR,
    SUBSETS_KEY,
    RunVerdicts,
    Subset,
    VerdictError,
    encode,
    read_verdicts,
    verdicts_path,
    write_verdicts,
)


def _verdicts(seed: int = 0, test_size: int = 1000) -> RunVerdicts:
    rng = np.random.default_rng(seed)
    test = Subset.of(np.arange(0, 10 * test_size, 10), np.arange(test_size) % 10)
    pgd = Subset.of(test.indices[:200], np.zeros(200))
    points = {step: {"test_clean_acc": rng.random(test_size) < 0.8, "pgd_adv_acc": rng.random(200) < 0.3}
              for step in (0, 10, 20)}
    return RunVerdicts(points, {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd"}, {"test": test, "test/pgd": pgd})


def _identity_files(root) -> list[str]:
    return sorted(p.name for p in (root / SUBSETS_DIR).iterdir())


def _metadata(path) -> dict:
    return json.loads(pq.read_schema(path).metadata[SUBSETS_KEY])


def test_runs_of_a_store_share_one_identity_file_per_subset_and_read_back_bit_for_bit(tmp_path):
    store = ResultStore(tmp_path)
    runs = {"r1": _verdicts(0), "r2": _verdicts(1)}
    for run_id, verdicts in runs.items():
        store.write_verdicts(run_id, verdicts)
    store.write_verdicts("r1", runs["r1"], ATTACK_VERDICTS_DIR)  # `rft attack`'s folder: the same identities
    test, pgd = runs["r1"].subsets["test"], runs["r1"].subsets["test/pgd"]
    assert _identity_files(tmp_path) == sorted([f"{test.fingerprint}.json", f"{pgd.fingerprint}.json"])
    # the sidecar names each subset by fingerprint and size only
    assert _metadata(tmp_path / "verdicts" / "r2.parquet") == {
        "test": {"n": 1000, "fingerprint": test.fingerprint}, "test/pgd": {"n": 200, "fingerprint": pgd.fingerprint}}
    fresh = ResultStore(tmp_path)  # nothing remembered: the identities come from their files
    for run_id, verdicts in runs.items():
        back = fresh.read_verdicts(run_id)
        for step, point in verdicts.points.items():
            for metric, ok in point.items():
                np.testing.assert_array_equal(back.points[step][metric], ok)
        for name, subset in verdicts.subsets.items():
            assert back.subsets[name].same_images(subset)
    assert fresh.read_verdicts("r1", ATTACK_VERDICTS_DIR).subset_of("pgd_adv_acc").same_images(pgd)
    assert store.run_ids() == []  # neither folder is a run


def test_an_interpolated_store_keeps_the_identities_its_sidecars_name_and_reads_alone(tmp_path):
    store = ResultStore(tmp_path)
    store.write_verdicts("r1", _verdicts())
    interpolated = ResultStore(tmp_path / "interpolated")  # as `rft interpolate` makes it, inside the result store
    verdicts = _verdicts()
    verdicts.points = {(20, alpha): point for alpha, point in zip((0.0, 0.5, 1.0), verdicts.points.values())}
    interpolated.write_verdicts("r1.wise-step20", verdicts)
    assert len(_identity_files(tmp_path / "interpolated")) == 2  # its own copies, the same files as the store's
    assert _identity_files(tmp_path / "interpolated") == _identity_files(tmp_path)
    back = ResultStore(tmp_path / "interpolated").read_verdicts("r1.wise-step20")
    assert sorted(back.points) == [(20, 0.0), (20, 0.5), (20, 1.0)]


def test_identities_live_on_an_object_store_too():
    fs = pafs._MockFileSystem()  # an in-memory filesystem, as an object store is reached
    verdicts = _verdicts()
    write_verdicts(fs, "bucket/store", "r1", verdicts)
    write_verdicts(fs, "bucket/store", "r2", _verdicts(1))
    files = fs.get_file_info(pafs.FileSelector(f"bucket/store/{SUBSETS_DIR}"))
    names = sorted(f"{subset.fingerprint}.json" for subset in verdicts.subsets.values())
    assert sorted(info.base_name for info in files) == names
    back = read_verdicts(fs, "bucket/store", "r2")
    assert back.subset_of("test_clean_acc").same_images(verdicts.subsets["test"])


def _inline(verdicts: RunVerdicts) -> bytes:
    """A sidecar as written before identities were kept per store: each subset's indices in its metadata."""
    table = pq.read_table(io.BytesIO(encode(verdicts)))
    inline = {name: subset.to_json() for name, subset in verdicts.subsets.items()}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({SUBSETS_KEY: json.dumps(inline)}), buffer, compression="zstd")
    return buffer.getvalue()


def test_sidecars_with_their_identity_inline_still_read(tmp_path):
    verdicts = _verdicts()
    (tmp_path / "verdicts").mkdir()
    (tmp_path / "verdicts" / "old.parquet").write_bytes(_inline(verdicts))
    back = ResultStore(tmp_path).read_verdicts("old")  # no identity file in this store
    assert not (tmp_path / SUBSETS_DIR).exists()
    assert back.subset_of("pgd_adv_acc").same_images(verdicts.subsets["test/pgd"])
    np.testing.assert_array_equal(back.points[20]["test_clean_acc"], verdicts.points[20]["test_clean_acc"])
    # resumed and written again, the run's sidecar moves its identities to the store's files
    ResultStore(tmp_path).write_verdicts("old", back)
    assert len(_identity_files(tmp_path)) == 2
    assert "indices" not in _metadata(tmp_path / "verdicts" / "old.parquet")["test"]


def test_a_missing_identity_file_is_named(tmp_path):
    verdicts = _verdicts()
    ResultStore(tmp_path).write_verdicts("r1", verdicts)
    missing = tmp_path / SUBSETS_DIR / f"{verdicts.subsets['test/pgd'].fingerprint}.json"
    missing.unlink()
    with pytest.raises(VerdictError, match=rf"verdicts/r1.parquet names the subset of 200 images .* its identity "
                                           rf"file {missing} is missing"):
        ResultStore(tmp_path).read_verdicts("r1")


def test_a_damaged_identity_file_is_named(tmp_path):
    verdicts = _verdicts()
    ResultStore(tmp_path).write_verdicts("r1", verdicts)
    damaged = tmp_path / SUBSETS_DIR / f"{verdicts.subsets['test'].fingerprint}.json"
    damaged.write_text("{not json")
    with pytest.raises(VerdictError, match=rf"subset identity file {damaged} is not readable"):
        ResultStore(tmp_path).read_verdicts("r1")
    # an identity file of another size under the fingerprint the sidecar names
    damaged.write_text(json.dumps(Subset(verdicts.subsets["test"].indices[:5], verdicts.subsets["test"].fingerprint)
                                  .to_json()))
    with pytest.raises(VerdictError, match=rf"{damaged} holds 5 images .* not the 1000"):
        ResultStore(tmp_path).read_verdicts("r1")


def test_an_identity_file_with_other_images_under_the_fingerprint_is_refused(tmp_path):
    verdicts = _verdicts()
    test = verdicts.subsets["test"]
    ResultStore(tmp_path).write_verdicts("r1", verdicts)
    forged = RunVerdicts(verdicts.points, verdicts.metric_subsets,
                         {**verdicts.subsets, "test": Subset(test.indices + 1, test.fingerprint)})
    with pytest.raises(VerdictError, match=rf"{test.fingerprint}.json holds 1000 other image indices"):
        ResultStore(tmp_path).write_verdicts("r2", forged)
    assert not (tmp_path / "verdicts" / "r2.parquet").exists()
    assert ResultStore(tmp_path).read_verdicts("r1").subsets["test"].same_images(test)  # the file is untouched


def test_the_identity_is_on_disk_before_the_sidecar_naming_it(tmp_path):
    """A write of the identity that fails leaves no sidecar naming it (the order of `write_verdicts`)."""
    (tmp_path / "verdicts").mkdir()
    (tmp_path / SUBSETS_DIR).write_text("a file where the identities' folder must be")
    with pytest.raises(StoreError, match="cannot write the verdicts of run r1"):
        ResultStore(tmp_path).write_verdicts("r1", _verdicts())
    assert not (tmp_path / "verdicts" / "r1.parquet").exists()
    assert verdicts_path(str(tmp_path), "r1").endswith("verdicts/r1.parquet")


def test_a_sidecar_naming_its_subsets_cannot_be_decoded_without_its_store():
    from rft_ray.results.verdicts import decode

    with pytest.raises(VerdictError, match="names its subsets by fingerprint: read it through its result store"):
        decode(encode(_verdicts()), "loose.parquet")
