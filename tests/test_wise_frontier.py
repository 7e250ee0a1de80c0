"""Per-trial pooling with WiSE-FT points: `auc_with_wise` is the best run's AUC with its own interpolations,
and that run (which need not be the plain best run) is the one whose dashed frontier the figure draws."""
import pyarrow as pa
import pytest

from analysis.frontier import frontier_auc


def _rows(run_ids, points, **extra):
    n = len(run_ids)
    return pa.table({"run_id": run_ids, "strategy": ["lora"] * n, "dataset": ["d"] * n, "step": [10] * n,
                     "test_clean_acc": [p[0] for p in points], "pgd_adv_acc": [p[1] for p in points],
                     "pgd_eps": [0.01] * n, **extra})


def test_per_trial_auc_with_wise_names_its_run_and_the_figure_draws_that_run(tmp_path, monkeypatch):
    from analysis import plots
    from analysis.cleaning import clean_table
    from analysis.wise import add_wise_auc, clean_wise, wise_groups

    # Plain: run a's AUC 0.9 * 0.1 = 0.09, run b's 0.25, so b is the plain best run. With its interpolation
    # (0.6, 0.6), run a's AUC is 0.6 * 0.6 + 0.3 * 0.1 = 0.39, above b's 0.25 (b has none).
    plain, _ = clean_table(_rows(["a", "b"], [(0.9, 0.1), (0.5, 0.5)]))
    wise = clean_wise(_rows(["a.wise-step10"], [(0.6, 0.6)], wise_alpha=[0.5], source_run_id=["a"]), plain, None,
                      strict=False)
    auc = [{"strategy": "lora", "dataset": "d", "auc": 0.25, "best_run_id": "b"}]
    add_wise_auc(auc, plain, wise, "hypervolume", "per_trial", None)
    assert auc[0]["auc_with_wise"] == pytest.approx(0.39) and auc[0]["wise_best_run_id"] == "a"

    pooled = [{"strategy": "lora", "dataset": "d", "auc": 0.25}]
    add_wise_auc(pooled, plain, wise, "hypervolume", "pooled", None)
    assert "wise_best_run_id" not in pooled[0]

    drawn = []
    real_outline = plots.frontier_outline
    monkeypatch.setattr(plots, "frontier_outline", lambda front, kind: drawn.append(front) or real_outline(front, kind))
    plots.plot_frontiers(plain, "d", tmp_path / "f.png", auc_rows=auc, wise=wise_groups(wise, None))
    plain_front, dashed_front = drawn
    assert frontier_auc(plain_front, "hypervolume") == pytest.approx(0.25)  # the plain best run, b
    assert frontier_auc(dashed_front, "hypervolume") == pytest.approx(auc[0]["auc_with_wise"])  # run a with WiSE
