"""`rft estimate SPEC`: what a run or a whole study costs before it runs.

Counting (exact, no model needed; `rft_ray.cost.counts`): trials, optimizer steps, evaluation points (from the
schedule), and at every point the clean images (train subset, test subset, each OOD domain) and the PGD work
(images x radii x iterations). Dataset sizes come from the data when it is on this machine, else from the
official sizes each dataset states in its registry entry, so `rft estimate experiments/paper.yaml` works
anywhere.

Costs (seconds per image) come from, in order of precedence: CLI flags; a `costs:` section in the spec
(or a `--costs FILE`); else a short calibration run of the spec's model and strategies on this machine
through the engine's own training step, clean forward and PGD iteration (`rft_ray.cost.calibrate`; cached in
the data cache folder, `--recalibrate` to redo). A `costs:` section may give per-image seconds directly, or
`tflops` (sustained FLOP/s of a target accelerator, in TFLOP/s), from which per-image seconds follow by
counting the model's FLOPs on the meta device (nothing downloaded, nothing computed).

Hours are accelerator-hours: every trial holds one accelerator (a GPU, or on a CPU-only machine the
`cpus_per_trial` cores it is given) per worker (`resources.workers_per_trial`) for its whole life, training,
evaluation and start-up alike. With N workers the training images and the evaluation subsets are shared
(`rft_ray.evaluation.sharding`; ideal scaling assumed: the all-reduce, the verdicts' gather and the shards'
unequal PGD work are not counted, and were not measured on GPUs), while the start-up holds all N devices, so
its accelerator-hours count N times.

Our evaluation savings: PGD exits early, so an image leaves the attack as soon as it is misclassified
(clean or at any iterate). How much that saves depends on how many images stand: with clean accuracy `a`
and robust accuracy `r` on the attacked images, and images breaking *uniformly* over the iterations
(conservative: real attacks break most images in their first few iterations), the iterations cost
`S*a - (a-r)*(S-1)/2` forward-backward passes per attacked image instead of `S`. The estimate states the
`a` and `r` it assumes and prints the saving over a range of `r`.

A stronger-attack pass (AutoAttack on the checkpoints `output.keep_checkpoints` keeps, `rft_ray.cost.stronger`)
is estimated on its own line, best and worst case, and never added to the training totals.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from rft_ray.config import SpecError, load_yaml
from rft_ray.cost.calibrate import (
    DEFAULT_TRIAL_OVERHEAD_S,
    Costs,
    calibrated,
    costs_from_flops,
)
from rft_ray.cost.counts import Plan, load_plan
from rft_ray.cost.stronger import stronger_attack, stronger_attack_json, stronger_attack_lines

DEFAULT_CLEAN_ACC = 0.9
DEFAULT_ROBUST_ACC = 0.3
SENSITIVITY = (0.1, 0.3, 0.5, 0.7)
COST_FIELDS = ("train_s_per_image", "eval_s_per_image", "pgd_s_per_iteration_image", "trial_overhead_s",
               "tflops", "device")


# ---------------------------------------------------------------------------------------------------
# Early-exit PGD


def pgd_passes_per_image(steps: int, clean_acc: float | None = None, robust_acc: float | None = None) -> float:
    """Forward-backward passes one attacked image costs on average over the S iterations.

    Without arguments: a full attack, S. With `clean_acc` a and `robust_acc` r: early exit with images
    breaking uniformly over the iterations, S*a - (a-r)*(S-1)/2 (images wrong on the clean input are
    never attacked; the survivors fall linearly from a at the first iterate to r at the last).
    """
    if clean_acc is None:
        return float(steps)
    a, r = clean_acc, robust_acc if robust_acc is not None else clean_acc
    if not (0 <= r <= a <= 1):
        raise ValueError(f"need 0 <= robust accuracy <= clean accuracy <= 1, got clean {a} and robust {r}")
    return steps * a - (a - r) * (steps - 1) / 2


def pgd_forwards_per_image(clean_acc: float | None = None, robust_acc: float | None = None) -> float:
    """Forward-only passes besides the iterations: full PGD evaluates the final iterate of every image (1);
    ours runs one clean forward over all images and the final forward over the survivors (1 + r)."""
    if clean_acc is None:
        return 1.0
    return 1.0 + (robust_acc if robust_acc is not None else clean_acc)


# ---------------------------------------------------------------------------------------------------
# Costs


def _check_costs_section(section: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise SpecError(f"must be a mapping of {', '.join(COST_FIELDS)} (and strategies), got {section!r}", where)
    allowed = set(COST_FIELDS) | {"strategies"}
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}", where)
    for key, value in section.items():
        if key in ("device", "strategies"):
            continue
        value = _number(value, f"{where}.{key}")
        if value < 0 or (key == "tflops" and value == 0):
            raise SpecError(f"must be positive, got {value}", f"{where}.{key}")
        section[key] = value
    for name, sub in (section.get("strategies") or {}).items():
        _check_costs_section(sub, f"{where}.strategies.{name}")
    return section


def _number(value: Any, where: str) -> float:
    if isinstance(value, str) and "/" in value:
        top, bottom = value.split("/", 1)
        value = float(top) / float(bottom)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"must be a number, got {value!r}", where) from None


def resolve_costs(plan: Plan, section: dict[str, Any], flags: dict[str, float | None], recalibrate: bool = False,
                  log=None) -> dict[str, Costs]:
    """Per group: flags over the costs section (its per-strategy entries over its top level) over calibration."""
    section = _check_costs_section(dict(section or {}), "costs")
    threads = max(1, min(int(plan.cpus_per_trial), os.cpu_count() or 1)) if plan.under_ray else None
    out: dict[str, Costs] = {}
    cache: dict[str, Costs] = {}
    for g in plan.groups:
        run = plan.runs[g.group]
        given = {k: v for k, v in section.items() if k != "strategies"}
        given.update((section.get("strategies") or {}).get(g.strategy, {}))
        given.update({k: v for k, v in flags.items() if v is not None})
        overhead = given.get("trial_overhead_s", DEFAULT_TRIAL_OVERHEAD_S if plan.under_ray else 0.0)
        per_image = ("train_s_per_image", "eval_s_per_image", "pgd_s_per_iteration_image")
        key = json.dumps([dataclasses.asdict(run.model), dataclasses.asdict(run.strategy), given], sort_keys=True,
                         default=str)
        if key in cache:
            out[g.group] = cache[key]
            continue
        if all(k in given for k in per_image):
            costs = Costs(*(float(given[k]) for k in per_image), float(overhead),
                          f"given ({given.get('device') or 'costs section / flags'})")
        else:
            if "tflops" in given:
                costs = costs_from_flops(run, float(given["tflops"]), float(overhead), str(given.get("device") or ""))
            else:
                costs = dataclasses.replace(calibrated(run, threads, recalibrate, log), trial_overhead_s=float(overhead))
            for k in per_image:  # explicit per-image values win over the FLOP-based or calibrated ones
                if k in given:
                    setattr(costs, k, float(given[k]))
        cache[key] = out[g.group] = costs
    return out


# ---------------------------------------------------------------------------------------------------
# The estimate


@dataclass
class Hours:
    training: float
    clean_eval: float
    pgd: float
    overhead: float
    validation: float = 0.0  # evaluation.validation's clean and PGD passes (not in clean_eval and pgd)

    @property
    def total(self) -> float:
        return self.training + self.clean_eval + self.pgd + self.validation + self.overhead

    @property
    def evaluation(self) -> float:
        return self.clean_eval + self.pgd + self.validation


def hours(plan: Plan, costs: dict[str, Costs], clean_acc: float | None = None,
          robust_acc: float | None = None) -> Hours:
    """Accelerator-hours of the plan; full PGD without accuracies, early-exit PGD with them."""
    train = clean = pgd = validation = overhead = 0.0
    held = plan.workers_per_trial  # devices a trial holds while its group starts
    for g in plan.groups:
        c = costs[g.group]
        train += g.trials * g.train_images * c.train_s_per_image
        per_attack = (pgd_passes_per_image(g.pgd_steps, clean_acc, robust_acc) * c.pgd_s_per_iteration_image
                      + pgd_forwards_per_image(clean_acc, robust_acc) * c.eval_s_per_image)
        clean += g.total_points * g.clean_images_per_point * c.eval_s_per_image
        pgd += g.total_points * g.pgd_images_per_point * g.pgd_radii * per_attack
        validation += g.total_points * (g.val_clean_images_per_point * c.eval_s_per_image
                                        + g.val_pgd_images_per_point * per_attack)
        overhead += g.trials * c.trial_overhead_s
    return Hours(train / 3600, clean / 3600, pgd / 3600, held * overhead / 3600, validation / 3600)


def estimate(plan: Plan, costs: dict[str, Costs], clean_acc: float = DEFAULT_CLEAN_ACC,
             robust_acc: float = DEFAULT_ROBUST_ACC) -> dict[str, Any]:
    full = hours(plan, costs)
    ours = hours(plan, costs, clean_acc, robust_acc)
    sensitivity = {r: hours(plan, costs, clean_acc, min(r, clean_acc)).total for r in SENSITIVITY}
    return {"full": full, "ours": ours, "sensitivity": sensitivity, "clean_acc": clean_acc, "robust_acc": robust_acc,
            "stronger_attack": stronger_attack(plan, costs)}


def _h(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} h"
    if value >= 1:
        return f"{value:.1f} h"
    return f"{value * 60:.1f} min"


def format_report(plan: Plan, costs: dict[str, Costs], result: dict[str, Any], spec_path: str = "") -> str:
    kind = "experiment" if plan.kind == "experiment" else "run"
    strategies = sorted({g.strategy for g in plan.groups})
    datasets = sorted({g.dataset for g in plan.groups}, key=[g.dataset for g in plan.groups].index)
    lines = [f"{spec_path or plan.name} ({kind} spec): {len(plan.groups)} group(s) = {len(strategies)} "
             f"strateg{'y' if len(strategies) == 1 else 'ies'} x {len(datasets)} dataset(s), {plan.trials} trial(s)",
             ""]
    lines += _count_lines(plan, result)
    lines.append("")
    lines += _cost_lines(plan, costs)
    lines.append("")
    lines += _hour_lines(plan, result)
    lines.append("")
    lines += stronger_attack_lines(plan, result["stronger_attack"], _h)
    return "\n".join(lines)


def _count_lines(plan: Plan, result: dict[str, Any]) -> list[str]:
    """The per-dataset table and the totals: trials, steps, images, points, PGD passes."""
    lines = [f"{'dataset':<16}{'train/test imgs':>17}{'sizes':>7}{'steps':>8}{'points':>8}{'clean/pt':>10}"
             f"{'PGD img/pt':>11}{'trials':>8}"]
    seen = {}
    for g in plan.groups:
        row = seen.setdefault(g.dataset, [g, 0])
        row[1] += g.trials
    for dataset, (g, trials) in seen.items():
        radii = f"x{g.pgd_radii}" if g.pgd_radii > 1 else ""
        lines.append(f"{dataset:<16}{f'{g.sizes.train:,}/{g.sizes.test:,}':>17}{g.sizes.source:>7}{g.steps:>8,}"
                     f"{g.points:>8}{g.clean_images_per_point:>10,}{f'{g.pgd_images_per_point:,}{radii}':>11}"
                     f"{trials:>8}")
    steps_note = " (steps differ by strategy in a group)" if len({(g.dataset, g.steps) for g in plan.groups}) > len(seen) else ""
    lines.append("")
    pgd_full = sum(g.trials * g.pgd_iteration_images_full for g in plan.groups)
    attacked = sum(g.total_points * g.pgd_images_per_point * g.pgd_radii for g in plan.groups)
    a, r = result["clean_acc"], result["robust_acc"]
    steps_pgd = {g.pgd_steps for g in plan.groups}
    ours_passes = sum(g.total_points * g.pgd_images_per_point * g.pgd_radii * pgd_passes_per_image(g.pgd_steps, a, r)
                      for g in plan.groups)
    lines.append(f"trials {plan.trials:,}   training steps {plan.steps:,}{steps_note}   "
                 f"training images {sum(g.trials * g.train_images for g in plan.groups):,}")
    lines.append(f"evaluation points {plan.points:,}   clean images evaluated "
                 f"{sum(g.total_points * g.clean_images_per_point for g in plan.groups):,}")
    lines.append(f"PGD-{'/'.join(map(str, sorted(steps_pgd)))}: {attacked:,} image attacks, {pgd_full:,} forward-backward "
                 f"passes in full, {ours_passes:,.0f} with early exit (assumed below)")
    per_point = sorted({(g.val_clean_images_per_point, g.val_pgd_images_per_point) for g in plan.groups})
    if any(clean or robust for clean, robust in per_point):
        shown = ", ".join(f"{clean:,} clean + {robust:,} PGD" for clean, robust in per_point)
        lines.append(f"validation (evaluation.validation, what selections read): {shown} images per point; "
                     f"{sum(g.total_points * g.val_clean_images_per_point for g in plan.groups):,} clean images and "
                     f"{sum(g.total_points * g.val_pgd_images_per_point for g in plan.groups):,} image attacks in all")
    else:
        lines.append("validation: none measured (evaluation.validation off or no validation split): selections "
                     "have no held-out numbers to read")
    return lines


def _cost_lines(plan: Plan, costs: dict[str, Costs]) -> list[str]:
    """Where the costs come from, and each strategy's per-image costs."""
    sources = sorted({c.source for c in costs.values()})
    lines = ["costs: " + "; ".join(sources)]
    shown = {}
    for g in plan.groups:
        shown.setdefault(g.strategy, costs[g.group])
    lines.append(f"{'  strategy':<14}{'train s/img':>13}{'clean s/img':>13}{'PGD s/iter-img':>16}{'trial start s':>15}")
    for name, c in shown.items():
        lines.append(f"  {name:<12}{c.train_s_per_image:>13.3g}{c.eval_s_per_image:>13.3g}"
                     f"{c.pgd_s_per_iteration_image:>16.3g}{c.trial_overhead_s:>15.3g}")
    return lines


def _hour_lines(plan: Plan, result: dict[str, Any]) -> list[str]:
    """Accelerator-hours with full and with early-exit PGD, the assumption, and the wall clock."""
    full, ours = result["full"], result["ours"]
    a, r = result["clean_acc"], result["robust_acc"]
    lines = [f"accelerator-hours       {'full PGD':>12}{'our early-exit PGD':>22}"]
    for label, attr in (("training", "training"), ("clean evaluation", "clean_eval"), ("PGD evaluation", "pgd"),
                        ("validation", "validation"), ("trial start-up", "overhead")):
        lines.append(f"  {label:<22}{_h(getattr(full, attr)):>12}{_h(getattr(ours, attr)):>22}")
    lines.append(f"  {'total':<22}{_h(full.total):>12}{_h(ours.total):>22}")
    share_full = full.evaluation / full.total if full.total else 0.0
    share_ours = ours.evaluation / ours.total if ours.total else 0.0
    saving = 1 - ours.total / full.total if full.total else 0.0
    lines.append(f"  evaluation share       {share_full:>11.0%}{share_ours:>22.0%}")
    lines.append("")
    lines.append(f"early exit assumes clean accuracy {a:.2f} and robust accuracy {r:.2f} on the attacked images, images "
                 f"breaking uniformly over the iterations (conservative); it saves {saving:.0%} of the total.")
    lines.append("total at robust accuracy " + ", ".join(f"{rr:.1f}: {_h(v)}" for rr, v in result["sensitivity"].items())
                 + f" (full PGD: {_h(full.total)})")
    final = sorted({g.group for g in plan.groups if g.pgd_verdict == "final_iterate"})
    all_final = len(final) == len(plan.groups)
    if final:  # no early exit in these groups: their PGD costs the full column
        lines.append(f"PGD verdict final_iterate (no early exit) in {len(final)} of {len(plan.groups)} group(s): "
                     f"{'the full PGD column is this spec' if all_final else 'between the columns'}")
    if plan.concurrency:
        main, other, other_name = (full, ours, "early-exit PGD") if all_final else (ours, full, "full PGD")
        devices = plan.concurrency * plan.workers_per_trial
        lines.append(f"wall clock at {plan.concurrency} trial(s) at once: about {_h(main.total / devices)} "
                     f"({other_name} {_h(other.total / devices)})")
    if plan.workers_per_trial > 1:
        lines.append(f"{plan.workers_per_trial} workers per trial: training and evaluation shared at ideal scaling "
                     "(the all-reduce and the gather not counted), start-up on every device")
    return lines


def step_memories(plan: Plan, gpu: str) -> tuple[str, float, list[Any]]:
    """(GPU label, its GiB, each strategy's training-step memory) for `--gpu` (rft_ray.cost.memory: computed)."""
    from rft_ray.cost.memory import gpu_memory_gib, step_memory

    try:
        label, gib = gpu_memory_gib(gpu)
    except ValueError as err:
        raise SpecError(str(err), "--gpu") from None
    shown = {}
    for g in plan.groups:
        shown.setdefault((g.strategy, plan.runs[g.group].training.batch_size), plan.runs[g.group])
    return label, gib, [step_memory(run, plan.workers_per_trial) for run in shown.values()]


def memory_lines(label: str, gib: float, memories: list[Any]) -> list[str]:
    from rft_ray.cost.memory import TIGHT_FRACTION, verdict

    size = "" if label.endswith("GiB GPU") else f" ({gib:.1f} GiB)"
    lines = [f"training step memory on {label}{size}, computed (not measured on a GPU): weights, "
             f"gradients, AdamW state, saved activations counted on this machine's CPU, CUDA overhead; 'tight' "
             f"above {TIGHT_FRACTION:.0%}"]
    for m in memories:
        lines.append(f"  {m.strategy:<12} batch {m.batch:<5} {m.total:>6.1f} GiB  {verdict(m.total, gib):<13} "
                     f"({m.parts()})")
    return lines


def to_json(plan: Plan, costs: dict[str, Costs], result: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": plan.name, "kind": plan.kind, "trials": plan.trials, "training_steps": plan.steps,
        "workers_per_trial": plan.workers_per_trial,
        "evaluation_points": plan.points,
        "groups": [{**{k: v for k, v in dataclasses.asdict(g).items() if k != "sizes"},
                    "sizes": dataclasses.asdict(g.sizes), "train_images": g.train_images,
                    "pgd_iteration_images_full": g.pgd_iteration_images_full} for g in plan.groups],
        "costs": {name: dataclasses.asdict(c) for name, c in costs.items()},
        "assumption": {"clean_acc": result["clean_acc"], "robust_acc": result["robust_acc"],
                       "breaking": "uniform over the iterations"},
        "hours_full_pgd": {**dataclasses.asdict(result["full"]), "total": result["full"].total},
        "hours_early_exit": {**dataclasses.asdict(result["ours"]), "total": result["ours"].total},
        "total_hours_by_robust_acc": {str(k): v for k, v in result["sensitivity"].items()},
        "stronger_attack": stronger_attack_json(result["stronger_attack"]),
    }


def run_estimate(spec_path: str, overrides: dict[str, Any] | None = None, costs_file: str | None = None,
                 flags: dict[str, float | None] | None = None, clean_acc: float = DEFAULT_CLEAN_ACC,
                 robust_acc: float = DEFAULT_ROBUST_ACC, recalibrate: bool = False, as_json: bool = False,
                 log=None, gpu: str | None = None) -> str:
    plan = load_plan(spec_path, overrides)
    section = dict(plan.costs_section)
    if costs_file:
        data = load_yaml(costs_file)
        section.update(data.get("costs", data) if isinstance(data, dict) else {})
    if not 0 <= robust_acc <= clean_acc <= 1:
        raise SpecError(f"need 0 <= robust accuracy ({robust_acc}) <= clean accuracy ({clean_acc}) <= 1",
                        "--robust-acc")
    memory = step_memories(plan, gpu) if gpu else None  # before the calibration: a bad --gpu fails at once
    costs = resolve_costs(plan, section, flags or {}, recalibrate, log)
    result = estimate(plan, costs, clean_acc, robust_acc)
    if as_json:
        out = to_json(plan, costs, result)
        if memory:
            from rft_ray.cost.memory import verdict

            label, gib, memories = memory
            out["training_step_memory"] = {"gpu": label, "gpu_gib": gib, "computed": True, "strategies": [
                {**dataclasses.asdict(m), "total": m.total, "verdict": verdict(m.total, gib)} for m in memories]}
        return json.dumps(out, indent=1)
    report = format_report(plan, costs, result, spec_path)
    return report + ("\n\n" + "\n".join(memory_lines(*memory)) if memory else "")
