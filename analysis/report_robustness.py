"""The report's sections on stronger attacks, robustness curves and corruptions (`analysis.robustness`), as
blocks (`analysis.report_format`) that `analysis.report_sections` places; each appears only when its data exists."""
from __future__ import annotations

from typing import Any

from analysis.report_format import Block, num


def robustness_blocks(data: dict[str, Any]) -> list[Block]:
    return [*_attacks(data), *_curves(data), *_corruptions(data)]


def _images(n: int) -> str:
    return f"{n} point(s)" if n else "none"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _acc(value: float | None) -> str:
    return "n/a" if value is None else num(value)


def _attacks(data: dict[str, Any]) -> list[Block]:
    attacks = data.get("attacks")
    if not attacks:
        return []
    defs, conv = attacks["definitions"], data["conventions"]
    b: list[Block] = [("h2", "Stronger attacks: PGD and the attacks side by side")]
    b.append(("p", f"What is compared: {defs['attack_points']}."))
    b.append(("p", f"AUC ({conv['auc_kind']}): {defs['attack_auc']}."))
    header = ["attack", "eps", "strategy", "dataset", "PGD AUC", "attack AUC", "attack - PGD", "points",
              "attacked points", "runs", "images differ"]
    b.append(("table", header, [[r["attack_name"], r["eps_label"], r["strategy"], r["dataset"], num(r["pgd_auc"]),
                                 num(r["attack_auc"]), num(r["attack_minus_pgd"], signed=True), num(r["n_points"]),
                                 num(r["n_attacked"]), num(r["n_runs"]), _images(r["n_images_differ"])]
                                for r in attacks["auc"]]))
    for attack, name, label in dict.fromkeys((r["attack"], r["attack_name"], r["eps_label"]) for r in attacks["auc"]):
        if (path := data["figures"].get(f"attack_frontiers_{attack}_{label}")) is not None:
            b.append(("img", path, f"Frontiers under training-time PGD (solid) and {name} (dashed) at eps {label}"))
    threshold = attacks["masking_threshold"]
    b.append(("h2", "Gradient-masking flag"))
    b.append(("p", f"Threshold {threshold:g} ({threshold * 100:g} accuracy points): {defs['masking']}."))
    if attacks["masking"]:
        b.append(("table", ["attack", "eps", "strategy", "dataset", "flagged / compared points", "max gap (PGD - attack)",
                            "mean gap"],
                  [[r["attack_name"], r["eps_label"], r["strategy"], r["dataset"], f"{r['n_flagged']} / {r['n_points']}",
                    num(r["max_gap"], signed=True), num(r["mean_gap"], signed=True)] for r in attacks["masking"]]))
    else:
        b.append(("p", "No point holds both PGD's and a stronger attack's accuracy at one radius."))
    flagged = attacks["masking_flagged"]
    if flagged:
        shown = flagged[:50]
        b.append(("p", f"Flagged points ({len(flagged)}" + (", the first 50; all in analysis.json" if len(flagged) > 50
                                                           else "") + "):"))
        b.append(("table", ["attack", "eps", "strategy", "dataset", "run", "step", "clean acc", "PGD acc",
                            "attack acc", "gap"],
                  [[r["attack_name"], r["eps_label"], r["strategy"], r["dataset"], r["run_id"], num(r["step"]),
                    num(r["test_clean_acc"]), num(r["pgd_adv_acc"]), num(r["attack_adv_acc"]),
                    num(r["gap"], signed=True)] for r in shown]))
    if attacks["ignored_values"]:
        b.append(("p", "Values ignored (outside [0, 1]): " + "; ".join(
            f"{c}: {n}" for c, n in attacks["ignored_values"].items()) + "."))
    return b


def _curves(data: dict[str, Any]) -> list[Block]:
    curves = data.get("robustness_curves")
    if not curves:
        return []
    at = "each run's final step" if curves["step"] is None else f"the last step <= {curves['step']} of each run"
    b: list[Block] = [("h2", f"Robustness curves (at {at})"), ("p", _sentence(curves["definition"]))]
    b.append(("table", ["strategy", "dataset", "source", "eps", "run", "step", "accuracy", "mean over runs", "runs"],
              [[r["strategy"], r["dataset"], r["source_name"], r["eps_label"], r["run_id"], num(r["step"]),
                _acc(r["acc"]), num(r["mean_acc"]), num(r["n_runs"])] for r in curves["rows"]]))
    if "robustness_curves" in data["figures"]:
        b.append(("img", data["figures"]["robustness_curves"], "Accuracy against eps"))
    return b


def _corruptions(data: dict[str, Any]) -> list[Block]:
    corr = data.get("corruptions")
    if not corr:
        return []
    rows = corr["rows"]
    b: list[Block] = [("h2", "Accuracy per corruption"), ("p", _sentence(corr["definition"]))]
    for dataset in sorted({r["dataset"] for r in rows}):
        here = [r for r in rows if r["dataset"] == dataset]
        names = list(dict.fromkeys(r["corruption"] for r in here))
        strategies = list(dict.fromkeys(r["strategy"] for r in here))
        mean = {(r["strategy"], r["corruption"]): r["acc"] for r in here if r["severity"] == "all"}
        b.append(("p", f"{dataset}: accuracy per corruption (mean over severities, then runs):"))
        b.append(("table", ["strategy", *names], [[s, *(_acc(mean.get((s, c))) for c in names)] for s in strategies]))
        severities = sorted({r["severity"] for r in here if r["severity"] != "all"}, key=lambda k: (k == "unrecorded", k))
        if severities != ["unrecorded"]:
            by = {(r["strategy"], r["corruption"], r["severity"]): r["acc"] for r in here}
            b.append(("p", f"{dataset}: accuracy per corruption and severity:"))
            b.append(("table", ["strategy", "corruption", *(f"severity {s}" for s in severities)],
                      [[s, c, *(_acc(by.get((s, c, k))) for k in severities)]
                       for s in strategies for c in names if (s, c) in mean]))
    return b
