"""How verdicts are stored (rft_ray/results/verdicts.py, verdict_codec.py): each point against the previous point of
its metric (the changed images' positions as uint16 gaps, or the XOR of the bitmaps), zstd, decoded
transparently; (step, alpha) keys of interpolated points; and files written by 0.2.0 read as before."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rft_ray.results.verdict_codec import GAPS, PLAIN, XOR
from rft_ray.results.verdicts import (
    SUBSETS_KEY,
    RunVerdicts,
    Subset,
    SubsetFiles,
    VerdictError,
    decode,
    encode,
)


def _series(points: int = 30, n: int = 10_000, flips: int = 60, seed: int = 0) -> RunVerdicts:
    """A run's clean-test verdicts that change on `flips` images between points (as training moves few
    verdicts), a PGD metric measured at some points only, and a metric whose image count changes."""
    rng = np.random.default_rng(seed)
    ok, robust = rng.random(n) < 0.6, rng.random(200) < 0.3
    out = {}
    for k in range(points):
        ok = ok.copy()
        ok[rng.choice(n, flips, replace=False)] ^= True
        point = {"test_clean_acc": ok}
        if k % 3 == 0:
            robust = robust.copy()
            robust[rng.choice(200, 5, replace=False)] ^= True
            point["pgd_adv_acc"] = robust
        point["val_clean_acc"] = rng.random(100 + (k % 2) * 8) < 0.5  # sizes differ: stored plain
        out[50 * k] = point
    test = Subset.of(np.arange(n), np.zeros(n))
    return RunVerdicts(out, {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd", "val_clean_acc": "val"},
                       {"test": test, "test/pgd": Subset.of(np.arange(200), np.zeros(200)),
                        "val": Subset.of(np.arange(100), np.zeros(100))})


def _decoded(data: bytes, verdicts: RunVerdicts) -> RunVerdicts:
    """`data` decoded with the identities of `verdicts`' subsets at hand (as a store keeps them)."""
    identities = SubsetFiles(pafs._MockFileSystem(), "store/verdicts/subsets")
    for subset in verdicts.subsets.values():
        identities.put(subset)
    return decode(data, "memory", identities)


def _same(a: RunVerdicts, b: RunVerdicts) -> None:
    assert sorted(a.points) == sorted(b.points)
    for key, point in a.points.items():
        assert sorted(point) == sorted(b.points[key])
        for metric, ok in point.items():
            np.testing.assert_array_equal(b.points[key][metric], ok)
    assert a.metric_subsets == b.metric_subsets


@pytest.mark.parametrize("flips", [60, 1000])
def test_the_chain_round_trips_every_verdict_and_stores_less(flips):
    series = _series(flips=flips)
    chained, plain = encode(series), encode(series, chain=False)
    _same(series, _decoded(chained, series))
    _same(series, _decoded(plain, series))
    codings = pq.read_table(io.BytesIO(chained)).column("coding").to_pylist()
    assert codings.count(PLAIN) == 1 + 1 + 30  # each metric's first point, and every val point (its size changes)
    # few verdicts change: their positions (60 of 10,000); many: the XOR of the bitmaps (1,000 > 10,000 / 16)
    assert codings.count(GAPS if flips == 60 else XOR) == 29 + (9 if flips == 60 else 0)

    def per_point(chain: bool) -> float:  # what one more point costs (the file's footer is paid once)
        return (len(encode(_series(40, flips=flips), chain)) - len(encode(_series(20, flips=flips), chain))) / 20

    assert per_point(True) < (0.75 if flips == 60 else 0.65) * per_point(False), (per_point(True), per_point(False))


def test_interpolated_points_are_keyed_by_step_and_alpha():
    rng = np.random.default_rng(1)
    points = {(20, a): {"test_clean_acc": rng.random(300) < a} for a in (1.0, 0.0, 0.5)}
    verdicts = RunVerdicts(points, {"test_clean_acc": "test"}, {"test": Subset.of(np.arange(300), np.zeros(300))})
    back = _decoded(encode(verdicts), verdicts)
    _same(verdicts, back)
    table = pq.read_table(io.BytesIO(encode(verdicts)))
    assert table.column("alpha").to_pylist() == [0.0, 0.5, 1.0]  # in alpha order, each against the one before


def _written_by_0_2_0(verdicts: RunVerdicts) -> bytes:
    """A sidecar as 0.2.0 wrote it: columns step, metric, subset, n, bits (each packed plain), zstd."""
    rows = {"step": [], "metric": [], "subset": [], "n": [], "bits": []}
    for step in sorted(verdicts.points):
        for metric, ok in sorted(verdicts.points[step].items()):
            rows["step"].append(step)
            rows["metric"].append(metric)
            rows["subset"].append(verdicts.metric_subsets[metric])
            rows["n"].append(len(ok))
            rows["bits"].append(np.packbits(ok).tobytes())
    schema = pa.schema([("step", pa.int64()), ("metric", pa.string()), ("subset", pa.string()), ("n", pa.int32()),
                        ("bits", pa.binary())])
    subsets = {name: s.to_json() for name, s in verdicts.subsets.items()}
    table = pa.table(rows, schema=schema).replace_schema_metadata({SUBSETS_KEY: json.dumps(subsets)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def test_files_written_by_0_2_0_are_read_as_before():
    series = _series(points=5)
    back = decode(_written_by_0_2_0(series), "old.parquet")
    _same(series, back)
    assert back.subset_of("test_clean_acc").fingerprint == series.subsets["test"].fingerprint


def test_a_chain_without_its_first_point_is_named_damaged():
    series = _series(points=3)
    table = pq.read_table(io.BytesIO(encode(series)))
    rows = table.filter(pc.not_equal(table.column("step"), 0))  # drop step 0: step 50 now XORs nothing
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    with pytest.raises(VerdictError, match="step 50 of test_clean_acc cannot be decoded .*previous point"):
        _decoded(buffer.getvalue(), series)

