"""Storage cost of per-image verdicts against the records, and the paired bootstrap's time (docs/guides/analysis.md,
"Intervals"). Synthetic runs with random verdicts (incompressible bits: an upper bound). Run from the repository
root: python benchmarks/verdict_cost.py

With --store DIR [DIR ...]: real runs' verdict series instead. For every run of each store: its records file, its
sidecar as stored, and the same verdicts encoded by this version (each point against the previous one, zstd; the
subsets' identity kept once per store, not in the sidecar) and plain in this layout; what each point after the
first adds to the sidecar, against the entropy of its changes (`change_entropy`); and per store the identity
files' bytes and the sidecars' total against the records' total, with and without the identities. A store written
by an earlier version gives the before and after."""
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, '.')
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore
from rft_ray.results.verdicts import SUBSETS_DIR, RunVerdicts, Subset, encode
from analysis.bootstrap import bootstrap_groups


def _in_order(verdicts: RunVerdicts) -> list:
    """The run's points by step (and alpha, in `rft interpolate`'s files)."""
    return sorted(verdicts.points, key=lambda k: k if isinstance(k, tuple) else (k, -1.0))


def _first_points(verdicts: RunVerdicts, count: int) -> RunVerdicts:
    keys = _in_order(verdicts)[:count]
    return RunVerdicts({k: verdicts.points[k] for k in keys}, verdicts.metric_subsets, verdicts.subsets)


def _first_row_bytes(path: str, rows: int = 1) -> int:
    """The size of a run file holding only its first `rows` records (as `ResultStore.write_run` writes it)."""
    import io
    import pyarrow.parquet as pq
    buffer = io.BytesIO()
    pq.write_table(pq.read_table(path).slice(0, rows), buffer)
    return len(buffer.getvalue())


def _entropy_bits(changed: np.ndarray) -> float:
    p = changed.mean() if len(changed) else 0.0
    return 0.0 if p in (0.0, 1.0) else -len(changed) * (p * np.log2(p) + (1 - p) * np.log2(1 - p))


def change_entropy(verdicts: RunVerdicts) -> tuple[float, float]:
    """Bytes, over every point after the first: the empirical entropy of "this image's verdict changed since the
    metric's previous point", (a) one rate per metric and point, (b) one rate each for the images right and wrong
    at the previous point. No coding that gives every image of a metric (or of each of those two groups) the same
    change probability at a point can store the changes in fewer bits than these, the cost of the rates aside."""
    order0 = conditioned = 0.0
    previous: dict = {}
    for key in _in_order(verdicts):
        for metric, ok in verdicts.points[key].items():
            ok = np.asarray(ok, dtype=bool)
            before = previous.get(metric)
            if before is not None and len(before) == len(ok):
                changed = ok != before
                order0 += _entropy_bits(changed)
                conditioned += _entropy_bits(changed[before]) + _entropy_bits(changed[~before])
            previous[metric] = ok
    return order0 / 8, conditioned / 8


PAPER_POINTS = 17  # a CIFAR-10 run of experiments/paper.yaml (rft estimate experiments/paper.yaml: 7,020 steps)


def real_stores(roots):
    for root in roots:
        store = ResultStore(root)
        totals = np.zeros(8)
        identities = {}
        for run_id in store.run_ids():
            verdicts = store.read_verdicts(run_id)
            if verdicts is None:
                continue
            identities.update({s.fingerprint: len(json.dumps(s.to_json(), sort_keys=True)) for s in
                               verdicts.subsets.values()})  # the size of its identity file, stored or not
            points = len(verdicts.points)
            now = len(encode(verdicts))
            added = (now - len(encode(_first_points(verdicts, 1)))) / max(points - 1, 1)
            records = os.path.getsize(f"{root}/{run_id}.parquet")
            floor, floor_given = change_entropy(verdicts)
            sizes = [records, os.path.getsize(f"{root}/verdicts/{run_id}.parquet"),
                     now, len(encode(verdicts, chain=False)), points, added * (points - 1),
                     records - _first_row_bytes(f"{root}/{run_id}.parquet"), floor]
            totals += sizes
            if points >= PAPER_POINTS:  # what a run of the paper study's length would store
                side, rec = len(encode(_first_points(verdicts, PAPER_POINTS))), _first_row_bytes(
                    f"{root}/{run_id}.parquet", PAPER_POINTS)
                print(f"{root} {run_id}, its first {PAPER_POINTS} points: sidecar {side} B, records {rec} B "
                      f"({side / rec:.2f}x)")
            bits = sum(len(v) for v in next(iter(verdicts.points.values())).values())
            print(f"{root} {run_id}: {points} points, {bits} verdicts a point; per point: records "
                  f"{sizes[0] / points:.0f} B, sidecar as stored {sizes[1] / points:.0f} B, this version "
                  f"{now / points:.0f} B (each point after the first adds {added:.0f} B; to the records "
                  f"{sizes[6] / max(points - 1, 1):.0f} B), plain {sizes[3] / points:.0f} B; the entropy of the "
                  f"changes a point {floor / max(points - 1, 1):.0f} B ({floor_given / max(points - 1, 1):.0f} B "
                  f"given each image's previous verdict)")
        rec, stored, now, plain, points, added, rec_added, floor = totals
        folder = f"{root}/{SUBSETS_DIR}"
        on_disk = sum(os.path.getsize(f"{folder}/{name}") for name in os.listdir(folder)) if os.path.isdir(folder) \
            else 0
        ident = on_disk or sum(identities.values())
        runs = sum(1 for run_id in store.run_ids() if store.has_verdicts(run_id))
        print(f"{root}: {runs} runs, {int(points)} points; records {int(rec)} B ({rec / points:.0f} B/point); "
              f"sidecars as stored {int(stored)} B ({stored / rec:.2f}x the records); this version {int(now)} B "
              f"({now / points:.0f} B/point, {now / rec:.2f}x the records; {stored / now:.2f}x smaller than stored), "
              f"plus the store's {len(identities)} subset identities {int(ident)} B "
              f"({'on disk' if on_disk else 'as they would be written'}): {(now + ident) / rec:.2f}x the records "
              f"with them; each point after a run's first adds {added / max(points - runs, 1):.0f} B to its sidecar, "
              f"{rec_added / max(points - runs, 1):.0f} B to its records; the entropy of its changes "
              f"{floor / max(points - runs, 1):.0f} B")


if "--store" in sys.argv:
    real_stores(sys.argv[sys.argv.index("--store") + 1:])
    sys.exit(0)

rng = np.random.default_rng(0)
def run_sizes(points, n_test, n_pgd, domains, n_ood, n_val, n_vpgd):
    tmp = tempfile.mkdtemp(); store = ResultStore(tmp)
    recs, pts = [], {}
    for k in range(points):
        acc, rob = 0.5 + 0.4 * k / points, 0.3 - 0.2 * k / points
        v = {"test_clean_acc": rng.random(n_test) < acc, "pgd_adv_acc": rng.random(n_pgd) < rob,
             "val_clean_acc": rng.random(n_val) < acc, "val_pgd_adv_acc": rng.random(n_vpgd) < rob,
             **{f"ood_acc/{d}": rng.random(n_ood) < acc - 0.2 for d in domains}}
        pts[k * 50] = v
        recs.append(EvalRecord(run_id="r", strategy="lora", dataset="cifar10", model="vit_base_patch16_224.orig_in21k",
            lr=1e-3, weight_decay=0.01, seed=0, step=k * 50, total_steps=points * 50, epoch=k / 3, examples_seen=k * 1600,
            train_loss=float(rng.random()), train_clean_acc=float(rng.random()), test_clean_acc=float(v["test_clean_acc"].mean()),
            pgd_adv_acc=float(v["pgd_adv_acc"].mean()), pgd_eps=1/255, test_ood_accuracy=float(rng.random()),
            trainable_params=300000, total_params=86000000, wall_seconds=float(k * 30), eval_seconds=12.0,
            train_images=1000, test_images=n_test, pgd_images=n_pgd, val_clean_acc=float(v["val_clean_acc"].mean()),
            val_pgd_adv_acc=float(v["val_pgd_adv_acc"].mean()), val_images=n_val, val_pgd_images=n_vpgd,
            measured_at=time.time(), ood_acc={d: float(v[f"ood_acc/{d}"].mean()) for d in domains},
            ood_images={d: n_ood for d in domains}))
    store.write_run("r", recs)
    metric_subsets = {m: {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd", "val_clean_acc": "val",
                          "val_pgd_adv_acc": "val/pgd"}.get(m, "ood/" + m.split("/")[-1]) for m in pts[0]}
    sizes = {"test": n_test, "test/pgd": n_pgd, "val": n_val, "val/pgd": n_vpgd, **{f"ood/{d}": n_ood for d in domains}}
    subsets = {s: Subset.of(np.sort(rng.choice(50000, n, replace=False)), rng.integers(0, 10, n)) for s, n in sizes.items()}
    store.write_verdicts("r", RunVerdicts(pts, metric_subsets, subsets))
    rec = os.path.getsize(f"{tmp}/r.parquet"); ver = os.path.getsize(f"{tmp}/verdicts/r.parquet")
    ident = sum(os.path.getsize(f"{tmp}/{SUBSETS_DIR}/{name}") for name in os.listdir(f"{tmp}/{SUBSETS_DIR}"))
    bits = n_test + n_pgd + len(domains) * n_ood + n_val + n_vpgd
    return rec, ver, ident, bits

for label, points, args in (("paper study, cifar10 (test 10,000, PGD 1,000, 4 corruptions x 1,000, val 500 + PGD 200)", 60,
                             (10000, 1000, ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"], 1000, 500, 200)),
                            ("demo (test 300, PGD 200, 4 corruptions x 100, val 500 + PGD 200)", 6,
                             (300, 200, ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"], 100, 500, 200))):
    rec, ver, ident, bits = run_sizes(points, *args)
    print(f"{label}: {points} points; records file {rec} B ({rec/points:.0f} B/point); verdict sidecar {ver} B "
          f"({ver/points:.0f} B/point; {bits} verdicts = {bits/8:.0f} B packed per point); sidecar/records = "
          f"{ver/rec:.2f}; the subsets' identity, once per store: {ident} B")

# bootstrap time: demo-sized analysis: 7 strategies x 2 trials x 6 points, 300 test / 200 PGD images, 1000 replicates
P = 7 * 2 * 6
clean = rng.random((P, 300)) < 0.7; robust = rng.random((P, 200)) < 0.2
group = np.repeat(np.arange(7), 12)
t = time.perf_counter(); bootstrap_groups(clean, robust, np.arange(200), group, 7, replicates=1000, seed=0)
print(f"bootstrap, demo-sized (84 points, 7 strategies, 300/200 images), 1000 replicates: {time.perf_counter()-t:.2f} s")
P = 7 * 6 * 60  # paper-sized cifar10: 7 strategies x 6 grid points x 60 points
clean = rng.random((P, 10000)) < 0.7; robust = rng.random((P, 1000)) < 0.2
group = np.repeat(np.arange(7), 360)
t = time.perf_counter(); bootstrap_groups(clean, robust, np.arange(1000), group, 7, replicates=1000, seed=0)
print(f"bootstrap, paper-sized cifar10 ({P} points, 10,000/1,000 images), 1000 replicates: {time.perf_counter()-t:.2f} s")
