"""The paired bootstrap of frontier AUC (analysis/bootstrap.py, analysis/auc_intervals.py): the vectorised AUC
against the reference one, a small fixed-seed case, calibration on simulated studies with known accuracies, and
the report of a store whose runs kept their per-image verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.bootstrap import (
    best_resolved,
    bootstrap_groups,
    compare,
    hypervolume_batch,
    resampled_accuracies,
)
from analysis.frontier import hypervolume_auc


def test_the_vectorised_hypervolume_is_the_reference_one():
    rng = np.random.default_rng(3)
    acc, rob = rng.random((50, 7)), rng.random((50, 7))
    acc[:, 3] = acc[:, 2]  # ties in accuracy
    want = [hypervolume_auc(np.column_stack([a, r])) for a, r in zip(acc, rob)]
    np.testing.assert_allclose(hypervolume_batch(acc, rob), want, atol=1e-12)
    assert hypervolume_batch(np.zeros((2, 0)), np.zeros((2, 0))).tolist() == [0.0, 0.0]


def test_one_draw_serves_clean_and_robust_images():
    """The robust images are among the clean ones: a replicate that drops an image drops it from both."""
    clean = np.array([[True, True, False, False]])
    robust = np.array([[True, False]])  # images 0 and 2 of the clean subset were attacked
    acc, rob = resampled_accuracies(clean, robust, np.array([0, 2]), 5, np.random.default_rng(1))
    drawn = np.random.default_rng(1).integers(0, 4, size=(5, 4))
    weights = np.stack([np.bincount(row, minlength=4) for row in drawn])
    np.testing.assert_allclose(acc[:, 0], (weights[:, 0] + weights[:, 1]) / 4)
    drawn = weights[:, [0, 2]].sum(axis=1)
    np.testing.assert_allclose(rob[:, 0], weights[:, 0] / np.maximum(drawn, 1))


def test_a_small_bootstrap_with_a_fixed_seed():
    # Two strategies, one point each, on 20 images; B is right on every image A is right on and on four more.
    a_clean = np.array([1] * 10 + [0] * 10, bool)
    b_clean = np.array([1] * 14 + [0] * 6, bool)
    clean = np.stack([a_clean, b_clean])
    robust = clean.copy()  # robust = clean here: AUC = acc^2
    boot = bootstrap_groups(clean, robust, np.arange(20), np.array([0, 1]), 2, replicates=400, seed=7)
    assert boot.shape == (400, 2)
    assert boot[0].tolist() == pytest.approx(boot[0].tolist())  # deterministic
    assert np.array_equal(boot, bootstrap_groups(clean, robust, np.arange(20), np.array([0, 1]), 2,
                                                 replicates=400, seed=7))
    assert (boot[:, 1] >= boot[:, 0]).all()  # paired: B never loses on any resample of the same images
    groups, pairs = compare(["a", "b"], [0.25, 0.49], boot)  # AUC = acc^2: 0.5^2 and 0.7^2
    lo, hi = groups[0]["auc_ci"]
    assert lo < 0.25 < hi and 0 <= lo and hi <= 1
    assert pairs[0]["a_wins_share"] < 0.05 and pairs[0]["difference"] == pytest.approx(-0.24)
    assert pairs[0]["resolved"] and best_resolved(["a", "b"], [0.25, 0.49], pairs) is True
    # the same two strategies with unpaired, noisier verdicts: the difference is not resolved
    noisy = np.stack([a_clean, np.roll(b_clean, 3)])
    _, pairs = compare(["a", "b"], [0.25, 0.49], bootstrap_groups(noisy, noisy, np.arange(20), np.array([0, 1]), 2,
                                                                  replicates=400, seed=7))
    assert not pairs[0]["resolved"]


def _study(rng, fronts, n: int, m: int):
    """Verdicts of one simulated study: image i is right at a point of true accuracy p iff its latent
    difficulty u_i < p (every image has its own success probability profile, the points of a model agree)."""
    u, v = rng.random(n), rng.random(n)
    attacked = np.sort(rng.choice(n, m, replace=False))
    points = [(g, a, r) for g, front in enumerate(fronts) for a, r in front]
    clean = np.array([u < a for _, a, _ in points])
    robust = np.array([v[attacked] < r for _, _, r in points])
    return clean, robust, attacked, np.array([g for g, _, _ in points])


def test_intervals_cover_the_true_auc_in_95_percent_of_simulated_studies():
    fronts = [[(0.5, 0.4), (0.7, 0.3), (0.8, 0.2), (0.9, 0.1)], [(0.6, 0.35), (0.75, 0.3), (0.85, 0.15)]]
    true = [hypervolume_auc(np.array(f)) for f in fronts]
    true_diff = true[0] - true[1]
    rng = np.random.default_rng(7)
    studies, covered, diff_covered = 1000, np.zeros(2), 0  # coverage's standard error: 0.7 points
    for study in range(studies):
        clean, robust, attacked, group = _study(rng, fronts, n=500, m=200)
        boot = bootstrap_groups(clean, robust, attacked, group, 2, replicates=200, seed=study)
        measured = [hypervolume_auc(np.column_stack([clean[group == g].mean(1), robust[group == g].mean(1)]))
                    for g in range(2)]
        groups, pairs = compare(["a", "b"], measured, boot)
        covered += [g["auc_ci"][0] <= t <= g["auc_ci"][1] for g, t in zip(groups, true)]
        diff_covered += pairs[0]["difference_ci"][0] <= true_diff <= pairs[0]["difference_ci"][1]
    coverage = covered / studies
    assert ((0.93 <= coverage) & (coverage <= 0.97)).all(), coverage
    assert 0.93 <= diff_covered / studies <= 0.97, diff_covered / studies


def _record(run_id: str, strategy: str, step: int, clean: np.ndarray, robust: np.ndarray):
    from rft_ray.results.record import EvalRecord

    return EvalRecord(run_id=run_id, strategy=strategy, dataset="digits", model="m", lr=1e-3, weight_decay=0.0,
                      seed=0, step=step, total_steps=20, epoch=0.0, examples_seen=0, train_loss=0.0,
                      train_clean_acc=0.5, test_clean_acc=float(clean.mean()), pgd_adv_acc=float(robust.mean()),
                      pgd_eps=1 / 255, test_ood_accuracy=float("nan"), trainable_params=10, total_params=100,
                      wall_seconds=0.0, eval_seconds=0.0, test_images=len(clean), pgd_images=len(robust))


def _store_with_verdicts(root, shift: float, other_images: bool = False, own_errors: bool = False):
    """Two strategies, two runs each, three points a run, on the same 400 test / 100 PGD images; lora's true
    accuracies exceed full's by `shift`; it errs on the same images as full (harder images first), or with
    `own_errors` on images of its own."""
    from rft_ray.results.store import ResultStore
    from rft_ray.results.verdicts import RunVerdicts, Subset

    store, rng = ResultStore(root), np.random.default_rng(5)
    u, v = rng.random(400), rng.random(400)
    attacked = np.arange(0, 400, 4)
    test, pgd = Subset.of(np.arange(400), np.zeros(400)), Subset.of(attacked, np.zeros(100))
    for strategy, bonus in (("full", 0.0), ("lora", shift)):
        if own_errors and strategy == "lora":
            u, v = rng.random(400), rng.random(400)
        for run in ("a", "b"):
            run_id, records, points = f"{strategy}-{run}", [], {}
            for step, (acc, rob) in zip((0, 10, 20), ((0.5, 0.4), (0.7, 0.3), (0.9, 0.1))):
                clean, robust = u < acc + bonus, v[attacked] < rob + bonus
                records.append(_record(run_id, strategy, step, clean, robust))
                points[step] = {"test_clean_acc": clean, "pgd_adv_acc": robust}
            subsets = {"test": Subset.of(np.arange(1, 401), np.zeros(400)) if other_images and run == "b" else test,
                       "test/pgd": pgd}
            store.write_run(run_id, records)
            store.write_verdicts(run_id, RunVerdicts(points, {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd"},
                                                     subsets))
    return store


def test_the_report_shows_auc_intervals_and_which_differences_are_resolved(tmp_path):
    from analysis.report import analyze

    _store_with_verdicts(tmp_path / "far", shift=0.08)
    result = analyze(str(tmp_path / "far"), tmp_path / "out-far", figures=True, replicates=500)
    data = result.data
    assert data["figures"]["pairwise_digits"] == "figures/pairwise_digits.png"  # the pairwise matrix, drawn
    assert (tmp_path / "out-far" / "figures" / "pairwise_digits.png").read_bytes()[:4] == b"\x89PNG"
    assert "figures/pairwise_digits.png" in (tmp_path / "out-far" / "report.md").read_text()
    rows = {r["strategy"]: r for r in data["auc"]}
    for r in rows.values():
        assert r["auc_ci"][0] < r["auc"] < r["auc_ci"][1]
    assert rows["lora"]["is_best"] and rows["lora"]["best_resolved"] is True
    (pair,) = data["auc_intervals"]["datasets"][0]["pairs"]
    assert (pair["a"], pair["b"], pair["resolved"]) == ("full", "lora", True) and pair["a_wins_share"] < 0.025
    report = (tmp_path / "out-far" / "report.md").read_text()
    assert f"{rows['lora']['auc']:.4f} [{rows['lora']['auc_ci'][0]:.3f}, {rows['lora']['auc_ci'][1]:.3f}]" in report
    assert "Pairwise AUC differences" in report and "paired bootstrap over images, 500 replicates" in report

    # half a point, lora erring on other images than full: not resolvable on 400 images
    _store_with_verdicts(tmp_path / "near", shift=0.005, own_errors=True)
    data = analyze(str(tmp_path / "near"), tmp_path / "out-near", figures=False, replicates=500).data
    best = next(r for r in data["auc"] if r["is_best"])
    assert best["best_resolved"] is False
    assert "not resolved from the second" in (tmp_path / "out-near" / "report.md").read_text()


def test_no_interval_where_verdicts_do_not_pair_or_are_missing(tmp_path):
    from analysis.report import analyze
    from rft_ray.results.store import ResultStore

    _store_with_verdicts(tmp_path / "s", shift=0.05, other_images=True)
    data = analyze(str(tmp_path / "s"), tmp_path / "out", figures=False, replicates=50).data
    assert all(r["auc_ci"] is None for r in data["auc"])
    assert "different images" in data["auc_intervals"]["unavailable"]["digits"]
    assert "No AUC interval for digits" in (tmp_path / "out" / "report.md").read_text()
    store = _store_with_verdicts(tmp_path / "t", shift=0.05)
    store.fs.delete_file(f"{store.path}/verdicts/lora-b.parquet")  # a run written before verdicts were kept
    data = analyze(str(tmp_path / "t"), tmp_path / "out2", figures=False, replicates=50).data
    assert "run lora-b step 0 has no per-image verdicts" in data["auc_intervals"]["unavailable"]["digits"]
    assert ResultStore(tmp_path / "t").read().num_rows == 12  # the records themselves are untouched


def test_the_sweep_summary_and_the_parent_runs_metrics_carry_each_groups_interval(tmp_path):
    from rft_ray.sweep.report import summarize_store
    from rft_ray.tracking.metrics import group_metrics

    _store_with_verdicts(tmp_path / "s", shift=0.08)
    rows = summarize_store(str(tmp_path / "s"), select_on="test")
    for row in rows:
        lo, hi = row["frontier_auc_ci"]
        assert lo < row["frontier_auc"] < hi
    metrics = group_metrics(rows)
    lora = next(r for r in rows if r["strategy"] == "lora")
    assert (metrics["lora-digits/frontier_auc_lo"], metrics["lora-digits/frontier_auc_hi"]) == tuple(
        lora["frontier_auc_ci"])
    assert "full-digits/frontier_auc_lo" in metrics


def test_rft_analyze_takes_the_bootstrap_settings_and_refuses_bad_ones(tmp_path, capsys):
    import json

    from rft_ray.cli.analyze import main

    _store_with_verdicts(tmp_path / "s", shift=0.08)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "out"), "--no-figures", "--replicates", "200",
                 "--bootstrap-seed", "3"]) == 0
    data = json.loads((tmp_path / "out" / "analysis.json").read_text())
    intervals = data["auc_intervals"]
    assert (intervals["replicates"], intervals["seed"]) == (200, 3)
    # the report rft analyze writes (the case study's is regenerated so): AUC [lo, hi] and which differences resolve
    report = (tmp_path / "out" / "report.md").read_text()
    for row in data["auc"]:
        assert f"{row['auc']:.4f} [{row['auc_ci'][0]:.3f}, {row['auc_ci'][1]:.3f}]" in report
    (pair,) = intervals["datasets"][0]["pairs"]
    assert "| dataset | a | b | AUC a - b [lo, hi] | a wins | resolved |" in report
    assert (f"| digits | full | lora | {pair['difference']:+.4f} [{pair['difference_ci'][0]:.4f}, "
            f"{pair['difference_ci'][1]:.4f}] | {pair['a_wins_share']:.3f} | yes |") in report
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "out"), "--replicates", "1"]) == 2
    assert "--replicates is 0 (no intervals) or a count in [2, 100000], got 1" in capsys.readouterr().err
