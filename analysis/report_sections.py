"""What the report says: its sections, built from analysis.json's data as blocks that `analysis.report_render`
writes as Markdown and as HTML.

A block is a tuple: ("h1" | "h2" | "p", text), ("list", items), ("table", header, rows) with a cell either
text or ("bold", text), or ("img", path relative to the report, caption).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from analysis.models import model_note
from analysis.report_format import Block, hyper, num
from analysis.uncertainty import with_interval
from analysis.report_robustness import robustness_blocks
from rft_ray.config.metrics import selection_label
from rft_ray.results.record import eps_label


def report_blocks(data: dict[str, Any]) -> list[Block]:
    """The whole report, section by section."""
    return [*_overview(data), *_conventions(data["conventions"]), *_cleaning(data["cleaning"]),
            *_auc(data), *_seeds(data), *_rq1(data), *_rq3(data), *_knee(data), *robustness_blocks(data), *_frontiers(data)]


def _overview(data: dict[str, Any]) -> list[Block]:
    summary = data["summary"]
    b: list[Block] = [("h1", "Robustness trade-off in fine-tuning: analysis")]
    b.append(("p", f"Results: {data['results']}. {summary['n_runs']} runs, {summary['n_points']} evaluation points, "
                   f"{len(summary['strategies'])} strategies ({', '.join(summary['strategies'])}) on "
                   f"{len(summary['datasets'])} datasets ({', '.join(summary['datasets'])})."))
    note = model_note(summary.get("models") or [])
    if note:
        b.append(("p", note))
    if data["provenance"]:
        b.append(("h2", "Provenance"))
        b.append(("list", [f"{k}: {v}" for k, v in data["provenance"].items()]))
    return b


def _robustness(conv: dict[str, Any]) -> str:
    if conv.get("robustness_axis", "pgd") != "pgd":
        return (f"Robustness: {conv['robustness_label']} ({conv['robustness_column']}; --robustness "
                f"{conv['robustness_axis']}): every frontier, AUC, RQ1, knee table and figure below trades clean "
                "accuracy against it, where they say PGD accuracy (pgd_adv_acc); the attack sections stay PGD's.")
    return ("Robustness: PGD accuracy at eps " + (", ".join(eps_label(v) for v in conv["pgd_eps"]) or "unknown")
            + " (one radius per analysis; results at other radii are analysed separately with --eps"
            + (": this store also holds " + ", ".join(eps_label(v) for v in conv["other_pgd_eps"])
               if conv.get("other_pgd_eps") else "") + "; the OOD accuracy is an axis of its own: --robustness ood).")


def _conventions(conv: dict[str, Any]) -> list[Block]:
    return [("h2", "Conventions"), ("list", [
        _robustness(conv),
        f"Images per metric: {conv.get('images_per_metric', 'not recorded')}.",
        f"AUC kind: {conv['auc_definition']}.",
        f"Pooling: {conv['pooling_definition']}.",
        f"Step budget: {conv['step_budget_definition']}.",
        f"% above average: {conv['pct_above_average']}.",
        f"Trainable parameters: {conv['trainable_params']}.",
        f"Convergence (RQ1): {conv['convergence']}.",
        f"RQ1 summary: {conv['rq1_summary']}.",
        f"RQ3: {conv['rq3']}.",
        f"Figures: {conv['step_axis']}.",
        f"Undefined values: {conv['undefined_values']}.",
    ])]


def _cleaning(cl: dict[str, Any]) -> list[Block]:
    lines = [f"{cl['n_input_rows']} rows read, {cl['n_kept_rows']} used, {cl['n_dropped_rows']} dropped."]
    lines += [f"Dropped: {r}: {n} row(s)." for r, n in cl["dropped"].items()]
    lines += [f"Value ignored (treated as missing): {r}: {n}." for r, n in cl["ignored_values"].items()]
    return [("h2", "Data cleaning"), ("list", lines)]


def _auc(data: dict[str, Any]) -> list[Block]:
    conv, auc = data["conventions"], data["auc"]
    per_trial = conv["pooling"] == "per_trial"
    b: list[Block] = [("h2", f"AUC ({conv['auc_kind']}, {conv['pooling']}"
                             + (f", steps <= {conv['step_budget']}" if conv["step_budget"] is not None else "") + ")")]
    b.append(("p", "On test points, as the paper's (the AUC chooses no point; selections read validation). Each "
                   "cell: AUC [95% interval, where per-image verdicts allow] (% above the dataset's mean AUC); "
                   "**bold** with (best) = best strategy on the dataset, marked when its AUC is not resolved from the "
                   "second's. Trainable parameters: median over the strategy's groups."))
    b.append(_auc_grid(auc, data["summary"]["strategies"], data["summary"]["datasets"]))
    b.append(("p", "Per group: runs / points used, trainable parameters beside the AUC"
                   + (", and the best run (per-trial pooling)." if per_trial else ".")))
    wise = data.get("wise")  # WiSE-FT points (analysis.wise): their AUC beside the plain one, never in it
    if wise:
        b.append(("p", f"AUC with WiSE-FT points: the same AUC over the same points plus {wise['n_points']} weight "
                       f"interpolations (alphas {', '.join(f'{a:g}' for a in wise['alphas'])}) of "
                       f"{wise['n_checkpoints']} kept checkpoints of {wise['n_runs']} runs (`rft interpolate`, "
                       f"{wise['substore']}), each counted at its checkpoint's step; the plain AUC excludes them."))
    header = ["strategy", "dataset", "AUC"] + (["AUC with WiSE-FT points", "WiSE-FT points"] if wise else []) + [
        "% above avg", "best", "runs", "points", "trainable params"]
    rows = []
    for r in auc:
        row = [r["strategy"], r["dataset"], _ci(r, "auc")] + (
            [num(r.get("auc_with_wise")), num(r.get("n_wise_points"))] if wise else []) + [
               num(r["pct_above_average"], 1, True, "%"),
               _best(r), num(r["n_runs"]), num(r["n_points"]),
               num(r["trainable_params"]) if r["trainable_params"] is not None else "n/a"]
        if per_trial:
            row += [r["best_run_id"] or "n/a", num(r["auc_trial_mean"])]
        rows.append(row)
    b.append(("table", header + (["best run", "mean AUC over runs"] if per_trial else []), rows))
    b += _pairs(data.get("auc_intervals") or {})
    b += _figures(data, "pairwise", "Pairwise AUC comparison (paired bootstrap)")
    b.append(("p", "Trainable parameters vs AUC across strategies, per dataset:"))
    b.append(("table", ["dataset", "strategies", "Pearson", "Spearman", "note"],
              [[r["dataset"], num(r["n_strategies"]), num(r["pearson"], 3), num(r["spearman"], 3), r["note"] or ""]
               for r in data["params_vs_auc"]]))
    if "auc_heatmap" in data["figures"]:
        b.append(("img", data["figures"]["auc_heatmap"], "AUC heat map"))
    return b


def _seeds(data: dict[str, Any]) -> list[Block]:
    """Seed-to-seed against image-sampling variation of the AUC (`analysis.seeds`), where groups ran several
    training seeds (search.seeds)."""
    seeds = data.get("seeds") or {}
    if not seeds.get("groups"):
        return []
    b: list[Block] = [("h2", "Training seeds: seed-to-seed and image-sampling variation"), ("p", (
        "Per strategy and dataset run under several training seeds (search.seeds), on the same images: each seed's "
        "pooled frontier AUC with its paired-bootstrap 95% interval (image sampling, within the seed); over the "
        "seeds the AUC mean and sd (training variation) and the image sd (root mean square of the seeds' "
        "bootstrap sds)."))]
    rows = [[g["strategy"], g["dataset"], num(g["n_seeds"]),
             "; ".join(f"{s['seed']}: " + with_interval(num(s["auc"]), s["auc_ci"]) for s in g["seeds"]),
             num(g["auc_mean"]), num(g["auc_sd_seeds"]), num(g["auc_sd_images"])] for g in seeds["groups"]]
    b.append(("table", ["strategy", "dataset", "seeds", "AUC per seed [lo, hi]", "mean AUC", "sd over seeds",
                        "image sd"], rows))
    resolve = seeds.get("resolve") or []
    if resolve:
        b.append(("p", "Seeds per strategy that would put the best-vs-second difference of mean AUCs 1.96 standard "
                       "errors from 0 (sd^2 = (sd_best^2 + sd_second^2) / k + image sd of the difference^2; none "
                       "where image sampling alone hides it: more images are needed, not seeds)."))
        b.append(("table", ["dataset", "best", "second", "difference", "image sd of difference", "seeds needed"],
                  [[r["dataset"], r["best"], r["second"], num(r["difference"], 4, True), num(r["sd_image_difference"]),
                    _needed(r)] for r in resolve]))
    b += [("p", f"No seed intervals for {d if d != '*' else 'any dataset'}: {why}.")
          for d, why in seeds.get("unavailable", {}).items()]
    return b


def _needed(row: dict[str, Any]) -> str:
    if row["sd_image_difference"] is None or row["sd_seed_best"] is None or row["sd_seed_second"] is None:
        return "n/a (not measured)"
    return "none" if row["seeds_to_resolve"] is None else num(row["seeds_to_resolve"])


def _best(row: dict[str, Any]) -> str:
    if not row["is_best"]:
        return "no"
    return "yes (not resolved from the second)" if row.get("best_resolved") is False else "yes"


def _pairs(intervals: dict[str, Any]) -> list[Block]:
    """The AUC intervals' method, the pairwise differences per dataset, and where no interval could be computed."""
    b: list[Block] = []
    if intervals.get("method"):
        b.append(("p", f"AUC [lo, hi]: {intervals['method']}."))
    rows = [[d["dataset"], p["a"], p["b"], with_interval(num(p["difference"], 4, True), p["difference_ci"], 4),
             f"{p['a_wins_share']:.3f}", "yes" if p["resolved"] else "no"]
            for d in intervals.get("datasets", []) for p in d["pairs"]]
    if rows:
        b.append(("p", "Pairwise AUC differences (a - b) with their 95% interval; a wins: the share of bootstrap "
                       "replicates in which a's AUC is higher; resolved: the interval excludes 0."))
        b.append(("table", ["dataset", "a", "b", "AUC a - b [lo, hi]", "a wins", "resolved"], rows))
    b += [("p", f"No AUC interval for {d if d != '*' else 'any dataset'}: {why}.")
          for d, why in intervals.get("unavailable", {}).items()]
    return b


def _auc_grid(auc: list[dict[str, Any]], strategies: list[str], datasets: list[str]) -> Block:
    """The paper's layout: strategies x datasets, AUC (% above the dataset mean) per cell."""
    by = {(r["strategy"], r["dataset"]): r for r in auc}
    rows = []
    for s in strategies:
        cells: list[Any] = [s]
        params = [by[(s, d)]["trainable_params"] for d in datasets if (s, d) in by and by[(s, d)]["trainable_params"] is not None]
        cells.append(num(int(np.median(params))) if params else "n/a")
        pcts = []
        for d in datasets:
            r = by.get((s, d))
            if r is None:
                cells.append("n/a")
                continue
            text = f"{_ci(r, 'auc')} ({num(r['pct_above_average'], 1, True, '%')})"
            best = " (best)" if r.get("best_resolved") is not False else " (best, not resolved from the second)"
            cells.append(("bold", text + best) if r["is_best"] else text)
            if r["pct_above_average"] is not None:
                pcts.append(r["pct_above_average"])
        cells.append(num(float(np.mean(pcts)), 1, True, "%") if pcts else "NaN")
        rows.append(cells)
    return ("table", ["strategy", "trainable params"] + datasets + ["mean % above avg"], rows)


def _rq1(data: dict[str, Any]) -> list[Block]:
    b: list[Block] = [("h2", "RQ1: robustness peak vs accuracy convergence")]
    b.append(("p", f"On test points, as the paper's. Tolerance {data['conventions']['tolerance']:g}. Columns from "
                   "the run with the best final test clean accuracy (run), except the mean columns (over all runs) "
                   "and 'peak before conv.' counted over runs."))
    header = ["strategy", "dataset", "runs", "run", "peak rob.", "peak step", "final step", "final rob.",
              "drop", "final acc.", "converged step", "peak before conv.", "mean peak", "mean final", "mean drop",
              "runs peak before conv."]
    rows = [[r["strategy"], r["dataset"], num(r["n_runs"]), r["run_id"], _ci(r, "peak_robustness"),
             num(r["peak_step"]), num(r["final_step"]), _ci(r, "final_robustness"), num(r["drop"]),
             _ci(r, "final_accuracy"), num(r["converged_step"]), num(r["peak_before_convergence"]),
             num(r["mean_peak_robustness"]), num(r["mean_final_robustness"]), num(r["mean_drop"]),
             f"{r['n_peak_before_convergence']}/{r['n_runs']}"] for r in data["rq1"]]
    b.append(("table", header, rows))
    b.append(("p", INTERVAL_NOTE))
    b += _figures(data, "curves", "Accuracy and robustness against step")
    return b


def _rq3(data: dict[str, Any]) -> list[Block]:
    header = ["strategy", "points", "OOD points", "OOD~clean Pearson", "OOD~clean Spearman",
              "PGD~clean Pearson", "PGD~clean Spearman", "note"]
    return [("h2", "RQ3: OOD accuracy vs clean accuracy, next to PGD accuracy vs clean accuracy"),
            ("p", "On test points, as the paper's. Per strategy, over all its evaluation points (datasets pooled):"),
            ("table", header, _rq3_rows(data["rq3"], False)),
            ("p", "Per strategy and dataset:"),
            ("table", header[:1] + ["dataset"] + header[1:], _rq3_rows(data["rq3_by_dataset"], True))]


def _rq3_rows(rows: list[dict], with_dataset: bool) -> list[list[str]]:
    out = []
    for r in rows:
        note = "; ".join(f"{w}: {n}" for w, n in (("OOD", r["ood_note"]), ("PGD", r["pgd_note"])) if n)
        out.append([r["strategy"]] + ([r["dataset"]] if with_dataset else []) + [
            num(r["n_points"]), num(r["n_ood_points"]), num(r["ood_clean_pearson"], 3),
            num(r["ood_clean_spearman"], 3), num(r["pgd_clean_pearson"], 3), num(r["pgd_clean_spearman"], 3), note])
    return out


def _knee(data: dict[str, Any]) -> list[Block]:
    """Per group and per run: the frontier's knee, and with `rft analyze --min-acc` the most robust point at
    that clean-accuracy floor."""
    floor = data.get("min_acc")
    title = "Knee of the frontier" + (f" and the most robust point at clean accuracy >= {floor:g}"
                                      if floor is not None else "")
    if data.get("knees") is None:
        reason = data.get("knee_unavailable")
        return [("h2", title), ("p", f"Not chosen: {reason}")] if reason else []
    label = selection_label(data.get("knee_select_on", "test"))
    validation = data.get("knee_select_on") == "validation"
    b: list[Block] = [("h2", f"{title} ({label})")]
    b.append(("p", "Knee: the Pareto-front point farthest above the straight line joining the front's two extreme "
                   "points, both axes scaled to their range on the front (distance in those units; 0 for a front "
                   "of one or two points or a straight one; ties: earliest step, then run id). "
                   + ("At the floor: the highest PGD accuracy among points with clean accuracy >= the floor "
                      "(ties: higher clean accuracy, earliest step). " if floor is not None else
                      "No accuracy floor was set (rft analyze --min-acc F adds the most robust point at it). ")
                   + "Per group the points of all its runs are pooled; points with step <= the step budget. "
                   + ("Chosen on the validation points (val acc, val PGD: the front, the knee and the floor read "
                      "them); test acc and test PGD are the chosen point's test values, reported only. "
                      if validation else "Chosen on the test points: optimistic, the test images chose the point. ")
                   + INTERVAL_NOTE.split(" Curves:")[0]))
    values = ["val acc", "val PGD", "test acc", "test PGD"] if validation else ["test acc", "test PGD"]
    header = ["strategy", "dataset", "points", "front points", "knee run", "step", *values, "lr", "wd", "distance"]
    floor_header = ["at floor: run", "step", *values, "lr", "wd"] if floor is not None else []
    b.append(("table", header + floor_header,
              [_knee_row(r, [r["strategy"], r["dataset"]], floor, validation) for r in data["knees"]]))
    b.append(("p", "Per run:"))
    b.append(("table", ["strategy", "dataset", "run"] + header[2:] + floor_header,
              [_knee_row(r, [r["strategy"], r["dataset"], r["run_id"]], floor, validation)
               for r in data["knee_trials"]]))
    return b


INTERVAL_NOTE = ("[lo, hi]: the 95% Wilson interval of an accuracy from the images it was measured on (the "
                 "seeded subset's size; image-sampling variation only, not seed-to-seed); none shown where the "
                 "results did not record the count. Curves: the selected run's interval as a band.")


def _ci(row: dict[str, Any], key: str) -> str:
    """An accuracy with its 95% interval (`key`_ci) when known."""
    return with_interval(num(row[key]), row.get(f"{key}_ci"))


def _knee_row(r: dict[str, Any], keys: list[str], floor: float | None, validation: bool) -> list[str]:
    def values(point: dict[str, Any]) -> list[str]:
        chosen_on = [_ci(point, "val_clean_acc"), _ci(point, "val_pgd_adv_acc")] if validation else []
        return chosen_on + [_ci(point, "test_clean_acc"), _ci(point, "pgd_adv_acc")]

    width = 4 if validation else 2
    knee = r["knee"]
    cells = keys + [num(r["n_points"]), num(r["front_points"])]
    cells += ["n/a"] * (5 + width) if knee is None else [
        knee["run_id"], num(knee["step"]), *values(knee), hyper(knee["lr"]), hyper(knee["weight_decay"]),
        num(knee["knee_distance"])]
    if floor is not None:
        at = r["at_floor"]
        cells += ["none reaches it"] + [""] * (3 + width) if at is None else [
            at["run_id"], num(at["step"]), *values(at), hyper(at["lr"]), hyper(at["weight_decay"])]
    return cells


def _frontiers(data: dict[str, Any]) -> list[Block]:
    return [("h2", "Pareto frontiers (test points, as the paper's)"),
            *_figures(data, "frontiers", "Pareto frontiers of test points"),
            ("p", "Every number above is in analysis.json (null = undefined).")]


def _figures(data: dict[str, Any], kind: str, caption: str) -> list[Block]:
    """The per-dataset figures of one kind that were drawn."""
    return [("img", data["figures"][f"{kind}_{d}"], f"{caption}: {d}")
            for d in data["summary"]["datasets"] if f"{kind}_{d}" in data["figures"]]
