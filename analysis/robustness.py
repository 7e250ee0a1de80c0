"""The robustness part of `analyze`: stronger attacks (AUC per attack, gradient-masking flag), robustness
curves and the per-corruption table, with their figures and CSV files.

Each part is computed from the whole result table (every radius; `analyze`'s --eps selects the radius of the
main analysis only) and appears only when its data exists: the attack part when an `<slug>_adv_acc/<eps>`
column holds values, the curves when there is more than one robust measurement (radius or attack), the
corruption table when an ``ood_acc/<corruption>`` column does. Absent parts are None in analysis.json and
write no file. CSV files (tables/*.csv) hold the same rows as analysis.json, empty cells for undefined values.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from analysis.attacks import (
    DEFAULT_MASKING_THRESHOLD,
    attack_auc_table,
    check_masking_threshold,
    compared_points,
    masking_table,
)
from analysis.corruptions import corruption_table
from analysis.curves import has_curve, robustness_curves
from analysis.measured import MeasuredTable, attack_columns

DEFINITIONS = {
    "attack_points": "an attack is compared with training-time PGD at the same radius on the evaluation points "
    "holding both accuracies (PGD: pgd_adv_acc where pgd_eps is that radius, else pgd_adv_acc/<eps>); rft attack "
    "attacks the run's own seeded, class-stratified PGD subset, so both are measured on the same images "
    "('images differ' counts points whose recorded image counts disagree)",
    "attack_auc": "frontier AUC of (test_clean_acc, attack accuracy) and of (test_clean_acc, PGD accuracy) on "
    "exactly those points, every run and step of the strategy on the dataset pooled; attack - PGD < 0 when the "
    "attack finds adversarial examples PGD missed",
    "masking": "a point is flagged when PGD accuracy - attack accuracy > the threshold (strictly, 1e-9 slack "
    "for float rounding): PGD then overestimates robustness, a sign of gradient masking; pgd_rerun (PGD again) "
    "is not a stronger attack and is left out; max gap = largest PGD - attack over the compared points",
    "curves": "per strategy and dataset, the run with the best clean accuracy at its point (its last evaluated "
    "step, or the last <= the chosen step and the step budget; ties: higher pgd_adv_acc, then smaller run id); accuracy at every "
    "radius that point measured: clean accuracy at eps 0, training-time PGD (pgd_adv_acc at pgd_eps and "
    "pgd_adv_acc/<eps>) and each attack's <slug>_adv_acc/<eps>; mean = over the runs that measured it",
    "corruptions": "ood_acc/<corruption> at each run's last evaluated step (<= the step budget when set); a "
    "corruption's accuracy is the mean over the severities measured, then the mean over runs; a plain corruption "
    "name is measured at the run's dataset.severity, which the results do not record ('unrecorded')",
}


def check_robustness_options(masking_threshold: Any, curve_step: Any) -> None:
    """ValueError naming a masking threshold outside [0, 1] or a curve step that is not a whole number >= 0."""
    check_masking_threshold(masking_threshold)
    if curve_step is not None and (isinstance(curve_step, bool) or not isinstance(curve_step, int) or curve_step < 0):
        raise ValueError(f"curve step must be a whole number >= 0 or None (each run's final step), got {curve_step!r}")


def robustness_analysis(
    loaded: pa.Table, out: Path, *, kind: str = "hypervolume", step_budget: int | None = None,
    masking_threshold: float = DEFAULT_MASKING_THRESHOLD, curve_step: int | None = None, strict: bool = False,
    figures: bool = True, strategy_order: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(analysis.json's attacks / robustness_curves / corruptions, figure key -> path, CSV paths written)."""
    measured = MeasuredTable.of(loaded, strict=strict)
    auc = attack_auc_table(measured, kind, step_budget, strategy_order=strategy_order)
    masking, flagged = masking_table(measured, masking_threshold, step_budget, strategy_order=strategy_order)
    limits = [s for s in (curve_step, step_budget) if s is not None]
    curve_at = min(limits) if limits else None  # the curves respect the step budget too
    curves = robustness_curves(measured, curve_at, strategy_order=strategy_order)
    corruptions = corruption_table(measured, step_budget, strategy_order=strategy_order)
    data: dict[str, Any] = {"attacks": None, "robustness_curves": None, "corruptions": None}
    tables: dict[str, list[dict[str, Any]]] = {}
    if auc:
        data["attacks"] = {"masking_threshold": masking_threshold, "auc": auc, "masking": masking,
                           "masking_flagged": flagged, "ignored_values": dict(measured.ignored),
                           "definitions": {k: DEFINITIONS[k] for k in ("attack_points", "attack_auc", "masking")}}
        tables.update(attack_auc=auc, masking=masking, masking_flagged=flagged)
    if has_curve(curves):
        data["robustness_curves"] = {"step": curve_at, "rows": curves, "definition": DEFINITIONS["curves"]}
        tables["robustness_curves"] = curves
    if corruptions:
        data["corruptions"] = {"rows": corruptions, "definition": DEFINITIONS["corruptions"]}
        tables["corruptions"] = corruptions
    files = _draw(measured, out / "figures", data, kind, step_budget, strategy_order) if figures else {}
    return data, files, [_write_csv(out / "tables" / f"{name}.csv", rows) for name, rows in tables.items()]


def _draw(measured: MeasuredTable, fig_dir: Path, data: dict[str, Any], kind: str, step_budget: int | None,
          strategy_order: Sequence[str] | None) -> dict[str, str]:
    from analysis import (
        robustness_plots,  # lazy: matplotlib only when figures are drawn
    )

    files = {}
    if data["attacks"] is not None:
        for attack in attack_columns(measured.table.column_names):
            if any(len(p["acc"]) for p in compared_points(measured, attack, step_budget).values()):
                key = f"attack_frontiers_{attack.slug}_{attack.label}"
                files[key] = robustness_plots.plot_attack_frontiers(
                    measured, attack, fig_dir / f"attack_frontiers_{attack.slug}_{attack.eps * 255:g}-255.png",
                    kind=kind, step_budget=step_budget, strategy_order=strategy_order)
    if data["robustness_curves"] is not None:
        files["robustness_curves"] = robustness_plots.plot_robustness_curves(
            data["robustness_curves"]["rows"], fig_dir / "robustness_curves.png", strategy_order=strategy_order)
    return files


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (header from the first row; an empty table writes an empty file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return str(path)
