"""analysis/ on stronger attacks, robustness curves and corruptions: AUC per attack on hand-computed points,
the gradient-masking flag at and around its threshold, curve rows and order, corruption averages, and the
report's sections present exactly when their data is."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from analysis.attacks import attack_auc_table, masking_table
from analysis.corruptions import corruption_table, parse_domain
from analysis.curves import robustness_curves
from analysis.measured import attack_columns

E1, E2 = 1 / 255, 2 / 255
A1, A2, P2 = "aa_adv_acc/1/255", "aa_adv_acc/2/255", "pgd_adv_acc/2/255"
GN1, GN3 = "ood_acc/gaussian_noise/1", "ood_acc/gaussian_noise/3"

# run -> per step: (step, clean, PGD at 1/255, PGD at 2/255, AA at 1/255, AA at 2/255, aa_images,
#                   gaussian_noise s1, s3, contrast (plain name: severity unrecorded))
RUNS = {
    ("full", "full-A"): [(0, 0.2, 0.5, 0.3, None, None, None, 0.1, 0.1, 0.1),
                         (10, 0.6, 0.55, 0.35, 0.5, None, 100, 0.1, 0.1, 0.1),
                         (20, 0.8, 0.1, 0.05, 0.02, 0.01, 100, 0.6, 0.4, 0.5)],
    ("lora", "lora-A"): [(0, 0.3, 0.4, 0.2, 0.2, None, 50, 0.1, 0.1, 0.1),
                         (10, 0.7, 0.35, 0.15, 0.35, None, 100, 0.8, 0.2, None)],
    ("lora", "lora-B"): [(0, 0.5, 0.3, 0.1, None, None, None, 0.1, 0.1, 0.1),
                         (10, 0.9, 0.2, 0.05, None, None, None, 0.7, 0.5, 0.3)],
}


def attacked_table(attacks: bool = True, extra_radius: bool = True, corruptions: bool = True) -> pa.Table:
    rows = []
    for (strategy, run_id), points in RUNS.items():
        for step, acc, p1, p2, a1, a2, images, g1, g3, contrast in points:
            row = dict(run_id=run_id, strategy=strategy, dataset="cifar10", step=step, test_clean_acc=acc,
                       pgd_adv_acc=p1, pgd_eps=E1, pgd_images=100, test_ood_accuracy=0.5, trainable_params=10,
                       lr=1e-3, weight_decay=0.0, seed=0, total_steps=20)
            if extra_radius:
                row[P2] = p2
            if attacks:
                row.update({A1: a1, A2: a2, "aa_images": images, "aa_seconds/1/255": 1.0})
            row["ood_acc/shift"] = 0.4  # a natural domain: not a corruption
            if corruptions:
                row.update({GN1: g1, GN3: g3, "ood_acc/contrast": contrast})
            rows.append(row)
    return pa.Table.from_pylist(rows)


def _by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


def test_attack_columns_parsed_and_pgd_columns_excluded():
    names = ["pgd_adv_acc", P2, A2, A1, "aa_seconds/1/255", "aa_images", "square_adv_acc/0.5/255",
             "pgd_rerun_adv_acc/1/255", "fab_adv_acc/notaradius"]
    got = [(c.slug, c.label, c.column) for c in attack_columns(names)]
    assert got == [("aa", "1/255", A1), ("aa", "2/255", A2), ("square", "0.5/255", "square_adv_acc/0.5/255"),
                   ("pgd_rerun", "1/255", "pgd_rerun_adv_acc/1/255")]


def test_attack_auc_uses_only_attacked_points_for_both():
    rows = _by(attack_auc_table(attacked_table()), "attack", "eps_label", "strategy")
    full = rows[("aa", "1/255", "full")]
    # attacked points of full: (0.6, PGD 0.55 / AA 0.5) and (0.8, 0.1 / 0.02); step 0 (not attacked) left out
    assert full["pgd_auc"] == pytest.approx(0.6 * 0.55 + 0.2 * 0.1)  # 0.35, not 0.36 with step 0's (0.2, 0.5)
    assert full["attack_auc"] == pytest.approx(0.6 * 0.5 + 0.2 * 0.02)
    assert full["attack_minus_pgd"] == pytest.approx(0.304 - 0.35)
    assert (full["n_points"], full["n_attacked"], full["n_runs"], full["n_images_differ"]) == (2, 2, 1, 0)
    lora = rows[("aa", "1/255", "lora")]
    # lora-A only (lora-B was not attacked): PGD (0.3, 0.4), (0.7, 0.35); AA (0.3, 0.2) is dominated by (0.7, 0.35)
    assert lora["pgd_auc"] == pytest.approx(0.3 * 0.4 + 0.4 * 0.35)
    assert lora["attack_auc"] == pytest.approx(0.7 * 0.35)
    assert (lora["n_points"], lora["n_runs"], lora["n_images_differ"]) == (2, 1, 1)  # 50 AA vs 100 PGD images
    at2 = rows[("aa", "2/255", "full")]  # PGD at 2/255 from the pgd_adv_acc/2/255 column
    assert (at2["n_points"], at2["pgd_auc"], at2["attack_auc"]) == (1, pytest.approx(0.8 * 0.05), pytest.approx(0.008))
    assert ("aa", "2/255", "lora") not in rows
    trap = _by(attack_auc_table(attacked_table(), kind="trapezoid"), "attack", "eps_label", "strategy")
    assert trap[("aa", "1/255", "full")]["pgd_auc"] == pytest.approx(0.6 * 0.55 + 0.2 * (0.55 + 0.1) / 2)


def test_attack_without_pgd_at_its_radius_has_no_auc():
    rows = _by(attack_auc_table(attacked_table(extra_radius=False)), "attack", "eps_label", "strategy")
    at2 = rows[("aa", "2/255", "full")]
    assert (at2["n_attacked"], at2["n_points"], at2["pgd_auc"], at2["attack_auc"]) == (1, 0, None, None)


def test_masking_flagged_strictly_above_threshold():
    summary, flagged = masking_table(attacked_table(), 0.05)
    # full: gaps 0.55 - 0.5 = 0.05 (equal up to rounding: not flagged) and 0.1 - 0.02 = 0.08 (flagged);
    # lora-A: 0.4 - 0.2 = 0.2 (flagged) and 0.35 - 0.35 = 0 (not)
    assert [(r["strategy"], r["run_id"], r["step"]) for r in flagged if r["eps_label"] == "1/255"] == \
           [("full", "full-A", 20), ("lora", "lora-A", 0)]
    assert flagged[0]["gap"] == pytest.approx(0.08) and flagged[0]["attack_adv_acc"] == 0.02
    by = _by(summary, "eps_label", "strategy")
    assert (by[("1/255", "full")]["n_flagged"], by[("1/255", "full")]["n_points"]) == (1, 2)
    assert by[("1/255", "full")]["max_gap"] == pytest.approx(0.08)
    assert by[("1/255", "lora")]["max_gap"] == pytest.approx(0.2) and by[("1/255", "lora")]["n_flagged"] == 1
    assert (by[("2/255", "full")]["n_flagged"], by[("2/255", "full")]["max_gap"]) == (0, pytest.approx(0.04))
    _, lower = masking_table(attacked_table(), 0.04)
    assert [(r["eps_label"], r["run_id"], r["step"]) for r in lower] == \
           [("1/255", "full-A", 10), ("1/255", "full-A", 20), ("1/255", "lora-A", 0)]  # 2/255's 0.04 gap: equal
    _, none = masking_table(attacked_table(), 0.2)
    assert none == []  # lora's 0.2 gap equals the threshold


def test_masking_leaves_out_pgd_rerun_and_checks_threshold():
    table = attacked_table().append_column("pgd_rerun_adv_acc/1/255", pa.array([0.0] * 7, pa.float64()))
    summary, flagged = masking_table(table, 0.05)
    assert {r["attack"] for r in summary} == {"aa"} and {r["attack"] for r in flagged} == {"aa"}
    assert {r["attack"] for r in attack_auc_table(table)} == {"aa", "pgd_rerun"}  # the AUC table keeps it
    for bad in (-0.1, 1.5, float("nan"), "0.05", True):
        with pytest.raises(ValueError, match="masking threshold must be a number in"):
            masking_table(table, bad)


def test_robustness_curves_rows_values_and_order():
    rows = robustness_curves(attacked_table())
    full = [(r["source"], r["eps_label"], r["acc"]) for r in rows if r["strategy"] == "full"]
    assert full == [("clean", "0", 0.8), ("pgd", "1/255", 0.1), ("pgd", "2/255", 0.05), ("aa", "1/255", 0.02),
                    ("aa", "2/255", 0.01)]
    lora = _by([r for r in rows if r["strategy"] == "lora"], "source", "eps_label")
    assert {r["run_id"] for r in lora.values()} == {"lora-B"}  # best final clean accuracy (0.9 > 0.7)
    assert lora[("clean", "0")]["acc"] == 0.9 and lora[("pgd", "1/255")]["acc"] == 0.2
    assert lora[("pgd", "1/255")]["mean_acc"] == pytest.approx((0.35 + 0.2) / 2) and lora[("pgd", "1/255")]["n_runs"] == 2
    aa = lora[("aa", "1/255")]  # lora-B was not attacked; lora-A was, at its final step
    assert (aa["acc"], aa["mean_acc"], aa["n_runs"]) == (None, 0.35, 1)
    assert [r["strategy"] for r in rows] == ["full"] * 5 + ["lora"] * 4
    early = _by(robustness_curves(attacked_table(), step=0), "strategy", "source", "eps_label")
    assert early[("lora", "clean", "0")]["run_id"] == "lora-B" and early[("lora", "pgd", "2/255")]["acc"] == 0.1
    assert early[("full", "pgd", "1/255")]["acc"] == 0.5 and early[("lora", "aa", "1/255")]["acc"] is None
    assert ("full", "aa", "1/255") not in early  # full-A's step 0 was not attacked
    ordered = robustness_curves(attacked_table(), strategy_order=["lora", "full"])
    assert ordered[0]["strategy"] == "lora"
    with pytest.raises(ValueError, match="curve step must be a whole number"):
        robustness_curves(attacked_table(), step=-1)


@pytest.mark.parametrize("domain, parsed", [
    ("gaussian_noise/3", ("gaussian_noise", 3)), ("snow@5", ("snow", 5)), ("fog_s2", ("fog", 2)),
    ("jpeg_compression", ("jpeg_compression", None)), ("contrast", ("contrast", None)), ("shift", None),
    ("sketch", None), ("fog/7", None),
])
def test_parse_domain(domain, parsed):
    assert parse_domain(domain) == parsed


def test_corruption_table_averages_final_step():
    rows = _by(corruption_table(attacked_table()), "strategy", "corruption", "severity")
    assert [k for k in rows if k[0] == "full"] == [("full", "gaussian_noise", "all"), ("full", "gaussian_noise", "1"),
                                                   ("full", "gaussian_noise", "3"), ("full", "contrast", "all"),
                                                   ("full", "contrast", "unrecorded")]
    assert rows[("full", "gaussian_noise", "all")]["acc"] == pytest.approx(0.5)  # (0.6 + 0.4) / 2 at step 20
    assert rows[("full", "gaussian_noise", "3")]["acc"] == pytest.approx(0.4)
    # lora: per run the mean over severities (A: 0.5, B: 0.6), then over runs
    assert rows[("lora", "gaussian_noise", "all")]["acc"] == pytest.approx(0.55)
    assert rows[("lora", "gaussian_noise", "1")]["acc"] == pytest.approx(0.75)
    assert rows[("lora", "gaussian_noise", "3")]["acc"] == pytest.approx(0.35)
    assert rows[("lora", "contrast", "all")]["acc"] == pytest.approx(0.3) and rows[("lora", "contrast", "all")]["n_runs"] == 1
    assert not any(r["corruption"] == "shift" for r in rows.values())
    budget = _by(corruption_table(attacked_table(), step_budget=0), "strategy", "corruption", "severity")
    assert budget[("full", "gaussian_noise", "all")]["acc"] == pytest.approx(0.1)
    assert corruption_table(attacked_table(corruptions=False)) == []


def test_report_sections_files_and_json_when_data_exists(tmp_path):
    from analysis.report import analyze

    result = analyze(attacked_table(), tmp_path, masking_threshold=0.04)
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data == result.data
    assert data["attacks"]["masking_threshold"] == 0.04 and len(data["attacks"]["masking_flagged"]) == 3
    assert data["attacks"]["auc"] == json.loads(json.dumps(attack_auc_table(attacked_table())))
    assert data["robustness_curves"]["rows"] == json.loads(json.dumps(robustness_curves(attacked_table())))
    assert data["corruptions"]["rows"] == corruption_table(attacked_table())
    names = {str(Path(p).relative_to(tmp_path)) for p in result.files}
    assert {"figures/attack_frontiers_aa_1-255.png", "figures/attack_frontiers_aa_2-255.png",
            "figures/robustness_curves.png", "tables/attack_auc.csv", "tables/masking.csv",
            "tables/masking_flagged.csv", "tables/robustness_curves.csv", "tables/corruptions.csv"} <= names
    for p in result.files:
        if p.endswith(".png"):
            assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "tables" / "attack_auc.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(data["attacks"]["auc"])
    assert math.isclose(float(csv_rows[0]["pgd_auc"]), data["attacks"]["auc"][0]["pgd_auc"], rel_tol=1e-12)
    md = (tmp_path / "report.md").read_text()
    for text in ("## Stronger attacks", "## Gradient-masking flag", "Threshold 0.04", "| AutoAttack | 1/255 | full |",
                 "2 / 2", "## Robustness curves (at each run's final step)", "## Accuracy per corruption",
                 "| full | 0.5000 | 0.5000 |", "severity 1", "figures/robustness_curves.png"):
        assert text in md, text
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(data["figures"])  # every figure drawn is in the report
    assert {"attack_frontiers_aa_1/255", "attack_frontiers_aa_2/255", "robustness_curves"} <= set(data["figures"])


def test_report_omits_sections_without_data(tmp_path):
    from analysis.report import analyze

    table = attacked_table(attacks=False, extra_radius=False, corruptions=False)
    result = analyze(table, tmp_path, figures=False)
    assert (result.data["attacks"], result.data["robustness_curves"], result.data["corruptions"]) == (None, None, None)
    md = (tmp_path / "report.md").read_text()
    for text in ("Stronger attacks", "Gradient-masking", "Robustness curves", "Accuracy per corruption"):
        assert text not in md, text
    assert not (tmp_path / "tables").exists()
    # one extra PGD radius alone makes a curve (clean, 1/255, 2/255), still no attack section
    only_radii = analyze(attacked_table(attacks=False, corruptions=False), tmp_path / "r", figures=False)
    assert only_radii.data["robustness_curves"] is not None and only_radii.data["attacks"] is None


def test_analyze_rejects_bad_robustness_options(tmp_path):
    from analysis.report import analyze

    with pytest.raises(ValueError, match="masking threshold"):
        analyze(attacked_table(), tmp_path, masking_threshold=2.0, figures=False)
    with pytest.raises(ValueError, match="curve step"):
        analyze(attacked_table(), tmp_path, curve_step=-3, figures=False)


def _write_attacked_store(root: Path) -> None:
    """RUNS as a real ResultStore: records with their extra radius and corruption domains, and the AA columns
    written where `rft attack` writes them (the store's attack results, joined on by `ResultStore.read`)."""
    import pyarrow.fs as pafs

    from rft_ray.results.attacks import record_attack_results
    from rft_ray.results.record import EvalRecord
    from rft_ray.results.store import ResultStore

    store = ResultStore(root)
    for (strategy, run_id), points in RUNS.items():
        records, attacked = [], []
        for step, acc, p1, p2, a1, a2, images, g1, g3, contrast in points:
            ood = {"gaussian_noise/1": g1, "gaussian_noise/3": g3, **({"contrast": contrast} if contrast else {})}
            records.append(EvalRecord(
                run_id=run_id, strategy=strategy, dataset="cifar10", model="vit", lr=1e-3, weight_decay=0.0, seed=0,
                step=step, total_steps=20, epoch=step / 10, examples_seen=step * 8, train_loss=0.5, train_clean_acc=acc,
                test_clean_acc=acc, pgd_adv_acc=p1, pgd_eps=E1, test_ood_accuracy=0.5, trainable_params=10,
                total_params=100, wall_seconds=float(step), eval_seconds=0.1, pgd_images=100, ood_acc=ood,
                pgd_extra={"2/255": p2}))
            if a1 is not None or a2 is not None:
                attacked.append({"run_id": run_id, "step": step, A1: a1, A2: a2, "aa_images": images})
        store.write_run(run_id, records)
        if attacked:
            record_attack_results(pafs.LocalFileSystem(), store.path, run_id, attacked)


def test_cli_masking_threshold_and_curve_step_through_a_store(tmp_path, capsys):
    from rft_ray.cli.analyze import main

    root = tmp_path / "results"
    _write_attacked_store(root)
    code = main([str(root), "--out", str(tmp_path / "o"), "--no-figures", "--json", "--masking-threshold", "0.04",
                 "--curve-step", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert [(r["run_id"], r["step"]) for r in data["attacks"]["masking_flagged"]] == \
           [("full-A", 10), ("full-A", 20), ("lora-A", 0)]
    assert data["robustness_curves"]["step"] == 0
    assert _by(data["robustness_curves"]["rows"], "strategy", "source", "eps_label")[("full", "pgd", "1/255")]["acc"] == 0.5
    assert main([str(root), "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    assert "gradient masking (PGD above a stronger attack by > 0.05): 2 of 5 compared points flagged" in \
        capsys.readouterr().out
    for flag, value, message in (("--masking-threshold", "1.5", "--masking-threshold is an accuracy fraction"),
                                 ("--masking-threshold", "nan", "--masking-threshold is an accuracy fraction"),
                                 ("--curve-step", "-1", "--curve-step must be >= 0")):
        assert main([str(root), "--out", str(tmp_path / "o"), flag, value]) == 2
        assert message in capsys.readouterr().err


def test_curves_respect_the_step_budget(tmp_path):
    from analysis.report import analyze

    data = analyze(attacked_table(), tmp_path, step_budget=0, curve_step=10, figures=False).data
    assert data["robustness_curves"]["step"] == 0
    assert {r["step"] for r in data["robustness_curves"]["rows"]} == {0}
    assert "## Robustness curves (at the last step <= 0 of each run)" in (tmp_path / "report.md").read_text()
    # with the budget, the attack tables see step 0 only: lora-A's (0.3, PGD 0.4 / AA 0.2)
    lora = _by(data["attacks"]["auc"], "eps_label", "strategy")[("1/255", "lora")]
    assert (lora["n_points"], lora["pgd_auc"], lora["attack_auc"]) == (1, pytest.approx(0.12), pytest.approx(0.06))


def test_attack_value_outside_unit_interval_is_ignored_and_counted(tmp_path):
    from analysis.report import analyze

    table = attacked_table()
    values = table.column(A1).to_pylist()
    values[1] = 1.5  # full-A step 10
    table = table.set_column(table.column_names.index(A1), A1, pa.array(values, pa.float64()))
    full = _by(attack_auc_table(table), "eps_label", "strategy")[("1/255", "full")]
    assert (full["n_attacked"], full["n_points"], full["pgd_auc"]) == (1, 1, pytest.approx(0.08))
    data = analyze(table, tmp_path, figures=False).data
    assert data["attacks"]["ignored_values"] == {A1: 1}
    assert f"Values ignored (outside [0, 1]): {A1}: 1." in (tmp_path / "report.md").read_text()


def test_figures_have_a_panel_per_dataset(tmp_path):
    from analysis.report import analyze

    other = attacked_table()
    other = other.set_column(other.column_names.index("dataset"), "dataset", pa.array(["digits"] * other.num_rows))
    other = other.set_column(other.column_names.index("run_id"), "run_id",
                             pa.array([r + "-digits" for r in other.column("run_id").to_pylist()]))
    result = analyze(pa.concat_tables([attacked_table(), other]), tmp_path)
    assert {r["dataset"] for r in result.data["attacks"]["auc"]} == {"cifar10", "digits"}
    assert {r["dataset"] for r in result.data["robustness_curves"]["rows"]} == {"cifar10", "digits"}
    for key in ("attack_frontiers_aa_1/255", "robustness_curves"):
        assert (tmp_path / result.data["figures"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
