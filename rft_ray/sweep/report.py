"""What a sweep leaves for people: the summary table (best final and peak accuracy and robustness, frontier
AUC and its knee per strategy x dataset), the Pareto sets, and the provenance a report needs to be traced to its run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rft_ray.config.experiment import ExperimentSpec
from rft_ray.config.metrics import eps_label, same_radius, selection_label
from rft_ray.config.search import SearchSpec
from rft_ray.specs import strategy_names
from rft_ray.results.store import ResultStore
from rft_ray.sweep.console import say, warn
from rft_ray.sweep.results import GroupResult, TrialSummary


def summarize_store(store_root: str, min_acc: float | None = None, select_on: str = "validation"
                    ) -> list[dict[str, Any]]:
    """Per strategy and dataset: best final and peak accuracy and robustness, the frontier AUC and its knee,
    and with `min_acc` (search.min_acc) the most robust point at that clean-accuracy floor
    (`analysis.summary.sweep_summary`, strategies in the registry's order), chosen on `select_on`'s split."""
    from analysis.auc_intervals import add_summary_intervals
    from analysis.summary import sweep_summary

    store = ResultStore(store_root)
    table = store.read()
    rows = sweep_summary(table, strategy_order=strategy_names(), min_acc=min_acc, select_on=select_on)
    add_summary_intervals(store, table, rows)  # frontier_auc_ci from the runs' per-image verdicts
    return rows


INTERVALS_NOTE = ("[lo, hi]: an accuracy's 95% Wilson interval from the images it was measured on (image-sampling "
                  "variation only, not seed-to-seed; none where the results did not record the count); the frontier "
                  "AUC's: a paired bootstrap over the runs' per-image verdicts (analysis.bootstrap).")


def summary_markdown(rows: list[dict[str, Any]], groups: list[GroupResult], search: SearchSpec) -> str:
    """The summary table, the knee of each group's frontier, then the Pareto set of hyperparameters of each group,
    each saying which split chose (search.select_on) and which values are test."""
    from analysis.summary import knee_table_markdown, summary_table_markdown

    label = selection_label(search.select_on)
    keys, reported = search.keys(), search.reported_keys()
    shown = [k + (f" (test: {r})" if r is not None and r != k else "") for k, r in zip(keys, reported)]
    lines = [f"Summary per group ({label}; peaks and frontier AUC describe the test points, as the paper's):", "",
             summary_table_markdown(rows), "", f"Knee of each group's pooled frontier (analysis.knee; {label}):", "",
             knee_table_markdown(rows), "", INTERVALS_NOTE, "", f"Pareto set of hyperparameters per group ({label}; objectives: "
             f"{', '.join(shown)}):", ""]
    for g in groups:
        if not g.pareto:
            lines.append(f"- {g.name}: no completed trial")
            continue
        items = ", ".join(f"lr {t.lr:.3g} wd {t.weight_decay:.3g}" + (f" seed {t.seed}" if t.seed is not None else "")
                          + " -> " + _objective_cells(t, keys) for t in g.pareto)
        lines.append(f"- {g.name}: {items}")
    return "\n".join(lines) + "\n"


def _objective_cells(trial: TrialSummary, keys: list[str]) -> str:
    """The values the trial was chosen on, each with its test value where one is reported: "0.812 (test 0.797)"."""
    return " / ".join(f"{trial.objectives[k]:.3f}"
                      + (f" (test {trial.reported[k]:.3f})" if k in trial.reported else "") for k in keys)


def source_commit() -> str:
    """The git commit of the rft_ray source that ran (with '+changes' when the checkout differs from it)."""
    import subprocess

    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"unknown (not a git checkout; rft-ray {version('rft-ray')})"
    return commit + (" +changes" if dirty else "")


def sweep_provenance(experiment: ExperimentSpec, spec_path: str | None, wall_seconds: float) -> dict[str, str]:
    """What a report needs to be traced to its run: spec, seeds, code, time."""
    training = experiment.base.get("training") or {}
    return {"sweep": experiment.name, "spec": spec_path or "",
            "spec as run": f"{experiment.local_dir() / 'experiment.json'} (fingerprint {experiment.fingerprint()})",
            "search seed": str(experiment.search.seed), "training seed": str(training.get("seed", 0)),
            "commit": source_commit(), "storage": experiment.storage_root,
            "wall seconds": f"{wall_seconds:.0f}"}


def extra_radii(experiment: ExperimentSpec) -> list[float]:
    """The evaluation.pgd.extra_eps radii the sweep's runs measure."""
    from rft_ray.config import RunSpec

    radii: list[float] = []
    for group in experiment.groups:
        for radius in RunSpec.from_dict(group.run).evaluation.pgd.extra_eps:
            if not any(same_radius(radius, r) for r in radii):
                radii.append(radius)
    return radii


def write_summary(experiment: ExperimentSpec, results: list[GroupResult], local: Path
                  ) -> tuple[list[dict[str, Any]], str, list[str]]:
    """summary.md, summary.json and experiment.json in the sweep's local folder: (rows, markdown, files)."""
    rows = summarize_store(experiment.store_root, experiment.search.min_acc, experiment.search.select_on)
    markdown = summary_markdown(rows, results, experiment.search)
    local.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (("summary.md", markdown),
                       ("summary.json", json.dumps({"summary": rows, "groups": [g.to_dict() for g in results]},
                                                   indent=1, default=str)),
                       ("experiment.json", json.dumps(experiment.to_dict(), indent=1, default=str))):
        (local / name).write_text(text)
        files.append(str(local / name))
    return rows, markdown, files


def write_analysis(experiment: ExperimentSpec, analysis_dir: Path, spec_path: str | None,
                   wall_seconds: float) -> tuple[str | None, list[str]]:
    """The analysis report of the sweep's store, and one more per extra PGD radius (radii are never pooled):
    (its folder, the files written); (None, []) with a warning when it fails, as the results stand without it."""
    from analysis.report import analyze as run_analysis

    files: list[str] = []
    try:
        provenance = sweep_provenance(experiment, spec_path, wall_seconds)
        report = run_analysis(experiment.store_root, str(analysis_dir), provenance=provenance,
                              strategy_order=strategy_names(), min_acc=experiment.search.min_acc,
                              select_on=experiment.search.select_on)
        files += list(report.files)
        say(f"analysis: {analysis_dir}/report.html")
        for radius in extra_radii(experiment):
            folder_name = "eps-" + eps_label(radius).replace("/", "_")
            report = run_analysis(experiment.store_root, f"{analysis_dir}/{folder_name}", eps=radius,
                                  provenance=provenance, strategy_order=strategy_names(),
                                  min_acc=experiment.search.min_acc, select_on=experiment.search.select_on)
            files += list(report.files)
            say(f"analysis at eps {eps_label(radius)}: {analysis_dir}/{folder_name}/report.html")
    except Exception as err:  # noqa: BLE001 - the sweep's results stand without the report
        warn(f"rft sweep: warning: the analysis failed ({type(err).__name__}: {err}); run `rft analyze "
             f"{experiment.store_root}` to retry")
        return None, files
    return str(analysis_dir), files
