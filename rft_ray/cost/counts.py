"""What a spec runs, counted exactly without a model: split sizes, trials, optimizer steps, evaluation points
(from the schedule), and at every point the clean images and the images PGD attacks, on test and validation.

Dataset sizes come from the data when it is on this machine, else from the sizes the dataset states in its
registry entry (the official splits, `register_dataset(..., sizes=...)`), so `rft estimate
experiments/paper.yaml` works anywhere.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_ray.config import RunSpec, SpecError, apply_overrides, load_yaml
from rft_ray.data import dataset_config, dataset_entry
from rft_ray.data.parquet import resolve_source
from rft_ray.results.files import is_uri
from rft_ray.specs import run_spec


@dataclass
class SplitSizes:
    train: int  # after the validation split and train_limit: what the batches are drawn from
    test: int
    ood: dict[str, int]
    source: str  # "data" (counted from the files) or "known" (official sizes)
    val: int = 0  # the validation split (dataset.val_fraction of the training images)
    # images each OOD domain's validation part is drawn from (evaluation.validation.ood): a corruption's, the
    # validation split; another domain's, what its test subset leaves (rft_ray.evaluation.evaluator)
    val_ood: dict[str, int] = field(default_factory=dict)


def _held(n: int, fraction: float) -> int:
    return int(round(fraction * n))


def split_sizes(run: RunSpec) -> SplitSizes:
    """Sizes of the splits a run uses; from the data when it is here, else from the official sizes."""
    counted = _count_from_data(run)
    if counted is not None:
        return counted
    d = run.dataset
    entry = dataset_entry(d.name)
    if entry.sizes is None:
        raw = d.options or {}
        where = d.root or (raw.get("train") if isinstance(raw, dict) else None)
        raise SpecError(f"cannot count dataset {d.name!r}: its data is not readable here ({where}) and its size is "
                        "not known; run the estimate where the data is", "dataset")
    options = dataset_config(d.name, d.options)
    known = entry.sizes(d, options)
    train, test = known.train, known.test
    if test is None:  # the loader carves a seeded test split from train
        test = _held(train, getattr(options, "test_fraction", 0.2))
        train -= test
    ood = dict(known.ood) or {name: test for name in d.corruptions}
    # Own OOD sets not readable here: counted at the test split's size (what is evaluated of a domain is at most
    # evaluation.ood_examples of it, so the count is exact whenever both reach that).
    ood.update({name: test for name in d.ood})
    if d.train_limit is not None:
        train = min(train, d.train_limit)
    val = _held(train, d.val_fraction)
    corrupted = set() if known.ood else set(d.corruptions)
    return SplitSizes(train - val, test, ood, "known", val, _val_ood(run, ood, corrupted, val))


def _val_ood(run: RunSpec, ood: dict[str, int], corrupted: set[str], val: int) -> dict[str, int]:
    tested = run.evaluation.ood_examples
    return {name: val if name in corrupted else n - (n if tested is None else min(tested, n))
            for name, n in ood.items()}


def _count_from_data(run: RunSpec) -> SplitSizes | None:
    """Build the data bundle without decoding an image (loaders are lazy); None when the data is not here."""
    d = run.dataset
    local = d.name == "digits"
    if d.name == "parquet":
        train = (d.options or {}).get("train", "")
        source = resolve_source(train, d.root) if train else ""
        local = bool(train) and not is_uri(source) and Path(source).is_file()
    elif d.root is not None:
        local = not is_uri(d.root) and Path(d.root).expanduser().is_dir()
    if not local:
        return None
    from rft_ray.data import create_bundle

    spec = dataclasses.replace(d, download=False)
    bundle = create_bundle(spec, 8, cache=False)
    ood = {k: len(v) for k, v in bundle.ood.items()}
    return SplitSizes(len(bundle.train), len(bundle.test), ood, "data", len(bundle.val),
                      _val_ood(run, ood, set(bundle.val_ood), len(bundle.val)))


@dataclass
class RunCount:
    """The work of one trial of a group (every trial of a group does the same work)."""

    group: str
    strategy: str
    dataset: str
    trials: int
    batch_size: int
    steps: int
    points: int
    clean_images_per_point: int
    pgd_images_per_point: int  # images attacked at one radius
    pgd_radii: int
    pgd_steps: int
    pgd_verdict: str  # any_iterate: early exit applies; final_iterate: every image for every step
    sizes: SplitSizes
    model: str
    image_size: int | None
    keep_checkpoints: str = "frontier"  # output.keep_checkpoints: what an AutoAttack pass could later attack
    val_clean_images_per_point: int = 0  # evaluation.validation: clean validation images (and OOD validation ones)
    val_pgd_images_per_point: int = 0  # validation images attacked (at evaluation.pgd.eps only)

    @property
    def train_images(self) -> int:
        return self.steps * self.batch_size

    @property
    def total_points(self) -> int:
        return self.trials * self.points

    @property
    def pgd_iteration_images_full(self) -> int:
        """Forward-backward passes of a full (no early exit) PGD over the whole trial."""
        return self.points * self.pgd_images_per_point * self.pgd_radii * self.pgd_steps


def count_run(run: RunSpec, trials: int = 1, group: str | None = None) -> RunCount:
    from rft_ray.evaluation.schedule import EvalSchedule
    from rft_ray.models.strategies import create_strategy

    sizes = split_sizes(run)
    t, e = run.training, run.evaluation
    batch = min(t.batch_size, sizes.train)
    steps_per_epoch = max(1, sizes.train // batch)
    steps = t.steps if t.steps is not None else max(1, int(round(t.epochs * steps_per_epoch)))
    phases = create_strategy(run.strategy.name, run.strategy.options).phases(steps, t.lr)
    # a strategy with phases (lp_ft) starts the schedule again at each later phase
    points = len(EvalSchedule.from_spec(e, [phase.start for phase in phases[1:]]).points(steps))

    def take(count: int | None, available: int) -> int:
        return available if count is None else min(count, available)

    test = take(e.test_examples, sizes.test)
    clean = take(e.train_examples, sizes.train) + test + sum(take(e.ood_examples, n) for n in sizes.ood.values())
    radii = 1 + len(getattr(e.pgd, "extra_eps", None) or [])
    v = e.validation
    val_clean = take(v.examples, sizes.val) if v.enabled else 0
    val_ood = sum(take(v.ood_examples, n) for n in sizes.val_ood.values()) if v.enabled and v.ood and val_clean else 0
    return RunCount(group=group or run.run_id, strategy=run.strategy.name, dataset=run.dataset.name, trials=trials,
                    batch_size=batch, steps=steps, points=points, clean_images_per_point=clean,
                    pgd_images_per_point=take(e.pgd.examples, test), pgd_radii=radii, pgd_steps=e.pgd.steps,
                    pgd_verdict=e.pgd.verdict, sizes=sizes, model=run.model.name, image_size=run.model.image_size,
                    keep_checkpoints=run.output.keep_checkpoints, val_clean_images_per_point=val_clean + val_ood,
                    val_pgd_images_per_point=take(v.pgd_examples, val_clean))


@dataclass
class Plan:
    """Everything a spec runs: its groups, and how they run."""

    kind: str  # "experiment" or "run"
    name: str
    groups: list[RunCount]
    runs: dict[str, RunSpec]  # group name -> a representative run spec (for calibration)
    cpus_per_trial: float
    concurrency: int | None  # trials at once (None: auto, depends on the cluster)
    under_ray: bool
    costs_section: dict[str, Any] = field(default_factory=dict)
    workers_per_trial: int = 1  # data-parallel workers (devices) per trial (auto: counted as 1, said so)

    @property
    def trials(self) -> int:
        return sum(g.trials for g in self.groups)

    @property
    def points(self) -> int:
        return sum(g.total_points for g in self.groups)

    @property
    def steps(self) -> int:
        return sum(g.trials * g.steps for g in self.groups)


def is_experiment(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and any(k in data for k in ("base", "strategies", "search", "datasets"))


def plan_from_dict(data: dict[str, Any], name: str = "spec") -> Plan:
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    costs = data.pop("costs", None) or {}
    if is_experiment(data):
        from rft_ray.specs import experiment_spec

        experiment = experiment_spec(data)
        groups, runs = [], {}
        placeholder = {"training.lr": 1e-3, "training.weight_decay": 0.0, "output.run_id": "estimate"}
        for g in experiment.groups:
            run = run_spec(apply_overrides(g.run, placeholder))
            groups.append(count_run(run, experiment.trials(g), g.name))  # grid x search.seeds, or the budget
            runs[g.name] = run
        concurrency = experiment.resources.max_concurrent_trials
        workers = experiment.resources.workers_per_trial
        return Plan("experiment", experiment.name, groups, runs, float(experiment.resources.cpus_per_trial),
                    concurrency if isinstance(concurrency, int) else None, True, costs,
                    workers if isinstance(workers, int) else 1)
    run = run_spec(data)
    return Plan("run", name, [count_run(run, 1, run.run_id)], {run.run_id: run}, float(os.cpu_count() or 1), 1,
                False, costs)


def load_plan(path: str | Path, overrides: dict[str, Any] | None = None) -> Plan:
    data = load_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return plan_from_dict(data, Path(path).stem)
    except SpecError as err:
        raise SpecError(f"{err} (in {path})") from err
