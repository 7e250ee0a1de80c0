"""Uncertainty (analysis/uncertainty.py): the Wilson interval pinned by hand-computed cases, and where intervals
reach the user: the knee and RQ1 rows, the report's tables, the OOD axis' counts and `rft best`."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from analysis.axis import select_axis
from analysis.knee import group_knees
from analysis.rq1 import rq1_trials
from analysis.uncertainty import interval, wilson_interval, with_interval


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_interval_hand_computed_cases():
    # 50 of 100: centre 0.5, half-width 1.96/1.0384 * sqrt(0.0025 + 0.0000960) = 0.0962 (textbook value).
    lo, hi = wilson_interval(0.5, 100)
    assert (float(lo), float(hi)) == (pytest.approx(0.403832, abs=1e-6), pytest.approx(0.596168, abs=1e-6))
    # 0 of 10: the lower end is exactly 0, the upper z^2/(n+z^2) = 3.8415/13.8415 = 0.2775 (never an empty interval).
    lo, hi = wilson_interval(0.0, 10)
    assert float(lo) == pytest.approx(0.0, abs=1e-12) and float(hi) == pytest.approx(0.277533, abs=1e-6)
    lo, hi = wilson_interval(1.0, 10)  # mirrored
    assert float(lo) == pytest.approx(1 - 0.277533, abs=1e-6) and float(hi) == pytest.approx(1.0, abs=1e-12)
    # 170 of 200 PGD images; vectorised over several points at once.
    lo, hi = wilson_interval([0.85, 0.5, 0.03], [200, 1000, 200])
    want = [_wilson_by_hand(170, 200), _wilson_by_hand(500, 1000), _wilson_by_hand(6, 200)]
    np.testing.assert_allclose(lo, [w[0] for w in want], atol=1e-12)
    np.testing.assert_allclose(hi, [w[1] for w in want], atol=1e-12)
    assert float(hi[1] - lo[1]) == pytest.approx(2 * 0.0309, abs=2e-4)  # 1.6 points of SE at 1,000 images


def test_wilson_interval_is_undefined_without_a_count_and_refuses_a_non_fraction():
    lo, hi = wilson_interval([0.5, 0.5, 0.5, float("nan")], [float("nan"), 0, -3, 100])
    assert np.isnan(lo).all() and np.isnan(hi).all()
    assert interval(0.5, None) is None and interval(None, 10) is None
    assert interval(0.5, 100) == [pytest.approx(0.403832, abs=1e-6), pytest.approx(0.596168, abs=1e-6)]
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        wilson_interval(1.5, 10)
    assert with_interval("0.5000", [0.4038, 0.5962]) == "0.5000 [0.404, 0.596]"
    assert with_interval("0.5000", None) == "0.5000"


def _rows(counts: bool = True) -> pa.Table:
    rows = []
    for step, acc, rob in ((0, 0.2, 0.1), (10, 0.6, 0.4), (20, 0.9, 0.2)):
        row = dict(run_id="lora-digits-a", strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0,
                   seed=0, step=step, total_steps=20, test_clean_acc=acc, pgd_adv_acc=rob, pgd_eps=1 / 255,
                   test_ood_accuracy=0.5, trainable_params=10, **{"ood_acc/fog": 0.5, "ood_acc/snow": 0.25})
        if counts:
            row.update(test_images=1000, pgd_images=200, **{"ood_images/fog": 100, "ood_images/snow": 300})
        rows.append(row)
    return pa.Table.from_pylist(rows)


def test_knee_and_rq1_rows_carry_the_wilson_intervals_of_their_counts():
    knee = group_knees(_rows(), select_on="test")[0]["knee"]
    assert (knee["step"], knee["test_clean_acc"]) == (10, 0.6)
    assert knee["test_clean_acc_ci"] == pytest.approx(list(_wilson_by_hand(600, 1000)))
    assert knee["pgd_adv_acc_ci"] == pytest.approx(list(_wilson_by_hand(80, 200)))
    run = rq1_trials(_rows())[0]
    assert run["peak_robustness_ci"] == pytest.approx(list(_wilson_by_hand(80, 200)))
    assert run["final_robustness_ci"] == pytest.approx(list(_wilson_by_hand(40, 200)))
    assert run["final_accuracy_ci"] == pytest.approx(list(_wilson_by_hand(900, 1000)))
    # Results written before the counts were recorded: no interval, never a guessed one.
    old = group_knees(_rows(counts=False), select_on="test")[0]["knee"]
    assert old["test_clean_acc_ci"] is None and old["pgd_adv_acc_ci"] is None


def test_an_ood_axis_brings_its_own_image_counts():
    domain = group_knees(select_axis(_rows(), "ood:snow"), select_on="test")[0]["knee"]
    assert domain["pgd_adv_acc"] == 0.25
    assert domain["pgd_adv_acc_ci"] == pytest.approx(list(_wilson_by_hand(75, 300)))
    pooled = group_knees(select_axis(_rows(), "ood"), select_on="test")[0]["knee"]  # every domain's images together
    assert pooled["pgd_adv_acc_ci"] == pytest.approx(list(_wilson_by_hand(200, 400)))


def test_report_and_rft_best_show_the_intervals(tmp_path):
    from analysis.report import analyze
    from rft_ray.cli.best import _point_lines

    data = analyze(_rows(), tmp_path, figures=True, select_on="test").data
    report = (tmp_path / "report.md").read_text()
    lo, hi = _wilson_by_hand(600, 1000)
    assert f"0.6000 [{lo:.3f}, {hi:.3f}]" in report  # the knee's clean accuracy in the knee table
    lo, hi = _wilson_by_hand(40, 200)
    assert f"0.2000 [{lo:.3f}, {hi:.3f}]" in report  # RQ1's final robustness
    assert "95% Wilson interval" in report
    point = {**data["knees"][0]["knee"], "checkpoint": None}
    line = _point_lines("knee", point)[0]
    assert "clean acc 0.6000 [0.569, 0.630]" in line and "PGD acc 0.4000 [0.335, 0.469]" in line


def _validated_rows() -> pa.Table:
    """`_rows` with validation measured on 500 clean and 100 PGD images and 200 OOD validation images."""
    table = _rows()
    n = table.num_rows
    for name, values in (("val_clean_acc", [0.3, 0.5, 0.8]), ("val_pgd_adv_acc", [0.2, 0.3, 0.1]),
                         ("val_ood_accuracy", [0.4] * n), ("val_images", [500] * n), ("val_pgd_images", [100] * n),
                         ("val_ood_images", [200] * n)):
        table = table.append_column(name, pa.array(values))
    return table


def test_the_sweep_summary_tables_show_every_accuracy_with_its_interval():
    from analysis.summary import knee_table_markdown, summary_table_markdown, sweep_summary

    def cell(k: int, n: int, value: float) -> str:
        lo, hi = _wilson_by_hand(k, n)
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"

    [row] = sweep_summary(_rows(), select_on="test")
    assert row["final_acc_ci"] == pytest.approx(list(_wilson_by_hand(900, 1000)))  # the final point (step 20)
    assert row["peak_pgd_ci"] == pytest.approx(list(_wilson_by_hand(80, 200)))  # peak PGD at step 10
    assert row["best_ood_ci"] == pytest.approx(list(_wilson_by_hand(200, 400)))  # pooled: both domains' images
    line = summary_table_markdown([row]).splitlines()[2]
    for k, n, value in ((900, 1000, 0.9), (40, 200, 0.2), (80, 200, 0.4), (200, 400, 0.5)):
        assert cell(k, n, value) in line
    assert cell(600, 1000, 0.6) in knee_table_markdown([row])  # the knee: step 10

    [row] = sweep_summary(_validated_rows(), select_on="validation")
    line = summary_table_markdown([row]).splitlines()[2]
    # chosen on validation: the test value with its interval, then the validation value with its own
    assert f"{cell(900, 1000, 0.9)} ({cell(400, 500, 0.8)})" in line
    assert f"{cell(40, 200, 0.2)} ({cell(10, 100, 0.1)})" in line  # the final point: one run
    assert f"{cell(200, 400, 0.5)} ({cell(80, 200, 0.4)})" in line
    knee = knee_table_markdown([row])
    assert all(c in knee for c in (cell(250, 500, 0.5), cell(30, 100, 0.3), cell(600, 1000, 0.6)))
    # results without counts: the bare numbers, never a guessed interval
    [old] = sweep_summary(_rows(counts=False), select_on="test")
    assert old["final_acc_ci"] is None and "[" not in summary_table_markdown([old]).splitlines()[2]


def test_the_reports_knee_table_shows_the_validation_values_intervals(tmp_path):
    from analysis.report import analyze

    analyze(_validated_rows(), tmp_path, figures=False, select_on="validation")
    lo, hi = _wilson_by_hand(250, 500)
    assert f"0.5000 [{lo:.3f}, {hi:.3f}]" in (tmp_path / "report.md").read_text()  # the knee's val clean acc
