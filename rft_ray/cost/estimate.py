"""`rft estimate SPEC`: what a run or a whole study costs before it runs.

Counting (exact, no model needed): trials, optimizer steps, evaluation points (from the schedule), and at
every point the clean images (train subset, test subset, each OOD domain) and the PGD work (images x radii
x iterations). Dataset sizes come from the data when it is on this machine, else from the official sizes
of the dataset (`KNOWN_SIZES`), so `rft estimate experiments/paper.yaml` works anywhere.

Costs (seconds per image) come from, in order of precedence: CLI flags; a `costs:` section in the spec
(or a `--costs FILE`); else a short calibration run of the spec's model and strategies on this machine
(cached in the data cache folder, `--recalibrate` to redo). A `costs:` section may give per-image seconds
directly, or `tflops` (sustained FLOP/s of a target accelerator, in TFLOP/s), from which per-image seconds
follow by counting the model's FLOPs on the meta device (nothing downloaded, nothing computed).

Hours are accelerator-hours: every trial holds one accelerator (a GPU, or on a CPU-only machine the
`cpus_per_trial` cores it is given) for its whole life, training, evaluation and start-up alike.

Our evaluation savings: PGD exits early, so an image leaves the attack as soon as it is misclassified
(clean or at any iterate). How much that saves depends on how many images stand: with clean accuracy `a`
and robust accuracy `r` on the attacked images, and images breaking *uniformly* over the iterations
(conservative: real attacks break most images in their first few iterations), the iterations cost
`S*a - (a-r)*(S-1)/2` forward-backward passes per attacked image instead of `S`. The estimate states the
`a` and `r` it assumes and prints the saving over a range of `r`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_ray.config import RunSpec, SpecError, apply_overrides, load_yaml
from rft_ray.results.files import atomic_write
from rft_ray.specs import run_spec

DEFAULT_TRIAL_OVERHEAD_S = 27.0  # one trial's Ray Tune + Train start-up and tear-down, measured on 2 CPU cores
DEFAULT_CLEAN_ACC = 0.9
DEFAULT_ROBUST_ACC = 0.3
SENSITIVITY = (0.1, 0.3, 0.5, 0.7)

# Official split sizes (train, test), used when the data is not on this machine. Datasets with a seeded
# test split list their whole size as train and None as test.
KNOWN_SIZES: dict[str, tuple[int, int | None]] = {
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "caltech256": (29_780, None),  # 30,607 images, minus 827 of 257.clutter (include_clutter: false)
    "cub200": (5_994, 5_794),
    "stanford_dogs": (12_000, 8_580),
    "digits": (1_797, None),
}
CALTECH_CLUTTER = 827
CLASS_COUNTS = {"cifar10": 10, "cifar100": 100}  # equal images per class, so `classes` scales the sizes
# DomainNet (cleaned release), per domain: (train, test).
DOMAINNET_SIZES: dict[str, tuple[int, int]] = {
    "clipart": (33_525, 14_604), "infograph": (36_023, 15_582), "painting": (50_416, 21_850),
    "quickdraw": (120_750, 51_750), "real": (120_906, 52_041), "sketch": (48_212, 20_916),
}
COST_FIELDS = ("train_s_per_image", "eval_s_per_image", "pgd_s_per_iteration_image", "trial_overhead_s",
               "tflops", "device")


# ---------------------------------------------------------------------------------------------------
# Counting


@dataclass
class SplitSizes:
    train: int  # after the validation split and train_limit: what the batches are drawn from
    test: int
    ood: dict[str, int]
    source: str  # "data" (counted from the files) or "known" (official sizes)


def _held(n: int, fraction: float) -> int:
    return int(round(fraction * n))


def split_sizes(run: RunSpec) -> SplitSizes:
    """Sizes of the splits a run uses; from the data when it is here, else from the official sizes."""
    d = run.dataset
    counted = _count_from_data(run)
    if counted is not None:
        return counted
    options = d.options or {}
    if d.name == "domainnet":
        domain = options.get("domain", "real")
        train, test = DOMAINNET_SIZES[domain]
        others = options.get("ood_domains") or [x for x in DOMAINNET_SIZES if x != domain]
        ood = {x: DOMAINNET_SIZES[x][1] for x in others}
    elif d.name in KNOWN_SIZES:
        train, test = KNOWN_SIZES[d.name]
        if d.name == "caltech256" and options.get("include_clutter"):
            train += CALTECH_CLUTTER
        if d.name in CLASS_COUNTS and options.get("classes"):  # balanced datasets: a share of the classes
            share = len(options["classes"]) / CLASS_COUNTS[d.name]
            train, test = int(round(train * share)), int(round(test * share))
        if test is None:
            fraction = options.get("test_fraction", 0.25 if d.name == "digits" else 0.2)
            test = _held(train, fraction)
            train -= test
        ood = {}
    else:
        where = d.root or (options.get("train") if isinstance(options, dict) else None)
        raise SpecError(f"cannot count dataset {d.name!r}: its data is not readable here ({where}) and its size is "
                        "not known; run the estimate where the data is", "dataset")
    if not ood:
        ood = {name: test for name in d.corruptions}
    if d.train_limit is not None:
        train = min(train, d.train_limit)
    train -= _held(train, d.val_fraction)
    return SplitSizes(train, test, ood, "known")


def _count_from_data(run: RunSpec) -> SplitSizes | None:
    """Build the data bundle without decoding an image (loaders are lazy); None when the data is not here."""
    d = run.dataset
    local = d.name == "digits"
    if d.name == "parquet":
        train = (d.options or {}).get("train", "")
        local = bool(train) and ("://" not in train and (Path(d.root or ".") / Path(train).expanduser()).is_file())
    elif d.root is not None:
        local = "://" not in d.root and Path(d.root).expanduser().is_dir()
    if not local:
        return None
    from rft_ray.data import create_bundle

    spec = dataclasses.replace(d, download=False)
    bundle = create_bundle(spec, 8, cache=False)
    return SplitSizes(len(bundle.train), len(bundle.test), {k: len(v) for k, v in bundle.ood.items()}, "data")


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
    sizes: SplitSizes
    model: str
    image_size: int | None

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

    sizes = split_sizes(run)
    t, e = run.training, run.evaluation
    batch = min(t.batch_size, sizes.train)
    steps_per_epoch = max(1, sizes.train // batch)
    steps = t.steps if t.steps is not None else max(1, int(round(t.epochs * steps_per_epoch)))
    points = len(EvalSchedule.from_spec(e).points(steps))

    def take(count: int | None, available: int) -> int:
        return available if count is None else min(count, available)

    test = take(e.test_examples, sizes.test)
    clean = take(e.train_examples, sizes.train) + test + sum(take(e.ood_examples, n) for n in sizes.ood.values())
    radii = 1 + len(getattr(e.pgd, "extra_eps", None) or [])
    return RunCount(group=group or run.run_id, strategy=run.strategy.name, dataset=run.dataset.name, trials=trials,
                    batch_size=batch, steps=steps, points=points, clean_images_per_point=clean,
                    pgd_images_per_point=take(e.pgd.examples, test), pgd_radii=radii, pgd_steps=e.pgd.steps,
                    sizes=sizes, model=run.model.name, image_size=run.model.image_size)


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
            if experiment.search.mode == "grid":
                trials = g.grid.size
            else:
                trials = int(experiment.search.num_samples or 1)
            groups.append(count_run(run, trials, g.name))
            runs[g.name] = run
        concurrency = experiment.resources.max_concurrent_trials
        return Plan("experiment", experiment.name, groups, runs, float(experiment.resources.cpus_per_trial),
                    concurrency if isinstance(concurrency, int) else None, True, costs)
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


@dataclass
class Costs:
    train_s_per_image: float  # one training step (forward, backward, optimizer update) per image
    eval_s_per_image: float  # one clean forward, inference mode, per image
    pgd_s_per_iteration_image: float  # one PGD iteration (forward + gradient to the input) per image
    trial_overhead_s: float = DEFAULT_TRIAL_OVERHEAD_S
    source: str = ""


def _fingerprint_machine() -> dict[str, Any]:
    import torch

    return {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe_machine(threads: int | None = None) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    return (f"{device}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{threads or torch.get_num_threads()} threads")


def _model_for(run: RunSpec, meta: bool):
    import torch

    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy
    from rft_ray.training.setup import resolve_image_size

    size = resolve_image_size(run)
    model_spec = dataclasses.replace(run.model, source="random", weights=None)
    classes = 10
    if meta:
        with torch.device("meta"):  # shapes only: nothing allocated, nothing downloaded
            model = create_classifier(model_spec, classes)
            create_strategy(run.strategy.name, run.strategy.options).apply(model)
    else:
        model = create_classifier(model_spec, classes, seed=0)
        create_strategy(run.strategy.name, run.strategy.options).apply(model)
    return model, size, classes


def count_flops(run: RunSpec) -> dict[str, float]:
    """FLOPs per image of a training step, a clean forward and a PGD iteration (meta device: no compute)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model, size, _ = _model_for(run, meta=True)
    x = torch.empty(1, 3, size, size, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    out = {}
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    out["eval"] = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    out["train"] = counter.get_total_flops() * 1.0  # the optimizer update is negligible next to these
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    x.requires_grad_(True)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y, reduction="sum").backward()
    out["pgd"] = counter.get_total_flops()
    return out


def costs_from_flops(run: RunSpec, tflops: float, overhead: float, device: str) -> Costs:
    flops = count_flops(run)
    rate = tflops * 1e12
    return Costs(flops["train"] / rate, flops["eval"] / rate, flops["pgd"] / rate, overhead,
                 f"{device or 'target accelerator'} at an assumed sustained {tflops:g} TFLOP/s (FLOPs counted)")


def calibrate(run: RunSpec, threads: int | None = None, repeats: int = 3, max_batch: int = 32,
              budget_s: float = 20.0) -> Costs:
    """Time the spec's model and strategy on this machine: a few training steps, clean forwards, PGD iterations.

    Batches are capped at `max_batch` (per-image cost on a CPU hardly depends on the batch); each of the three
    measurements takes the median of `repeats` timed runs after one warm-up.
    """
    import torch
    import torch.nn.functional as F

    from rft_ray.training.setup import resolve_device

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(run.training.device)
        model, size, classes = _model_for(run, meta=False)
        model.to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        generator = torch.Generator().manual_seed(0)

        def batch(n: int):
            x = torch.rand(n, 3, size, size, generator=generator).to(device)
            y = torch.randint(0, classes, (n,), generator=generator).to(device)
            return x, y

        def timed(fn, n: int) -> float:
            x, y = batch(n)
            fn(x, y)  # warm-up
            seconds = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                began = time.perf_counter()
                fn(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - began)
            return sorted(seconds)[len(seconds) // 2] / n

        def train_step(x, y):
            model.train()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def clean(x, y):
            model.eval()
            with torch.inference_mode():
                model(x)

        def pgd_iteration(x, y):
            model.eval()
            x = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)

        # Small probe first, so that a big model on a CPU does not take minutes.
        probe = timed(train_step, 2)
        n_train = max(2, min(max_batch, run.training.batch_size, int(budget_s / max(probe, 1e-6) / (repeats + 1) / 3)))
        n_eval = max(2, min(2 * max_batch, run.evaluation.batch_size, 2 * n_train))
        costs = Costs(timed(train_step, n_train), timed(clean, n_eval), timed(pgd_iteration, n_eval),
                      DEFAULT_TRIAL_OVERHEAD_S, f"calibrated on this machine: {describe_machine(threads)}")
        return costs
    finally:
        torch.set_num_threads(previous)


def _calibration_key(run: RunSpec, threads: int | None) -> str:
    decisive = {"machine": _fingerprint_machine(), "threads": threads, "model": dataclasses.asdict(run.model),
                "strategy": dataclasses.asdict(run.strategy), "batch": run.training.batch_size,
                "eval_batch": run.evaluation.batch_size, "device": run.training.device}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:20]


def calibration_file() -> Path:
    from rft_ray.data.cache import cache_root

    return cache_root() / "calibration.json"


def calibrated(run: RunSpec, threads: int | None, recalibrate: bool = False, log=None) -> Costs:
    """`calibrate`, remembered per machine, model, strategy and batch sizes."""
    path = calibration_file()
    key = _calibration_key(run, threads)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not recalibrate and key in known:
        return Costs(**known[key])
    if log:
        log(f"calibrating {run.model.name} / {run.strategy.name} on this machine ...")
    costs = calibrate(run, threads)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[key] = dataclasses.asdict(costs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(known, indent=1))
    return costs


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
        elif "tflops" in given:
            costs = costs_from_flops(run, float(given["tflops"]), float(overhead), str(given.get("device") or ""))
            for k in per_image:  # explicit per-image values win over the FLOP-based ones
                if k in given:
                    setattr(costs, k, float(given[k]))
        else:
            costs = calibrated(run, threads, recalibrate, log)
            costs = dataclasses.replace(costs, trial_overhead_s=float(overhead))
            for k in per_image:
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

    @property
    def total(self) -> float:
        return self.training + self.clean_eval + self.pgd + self.overhead

    @property
    def evaluation(self) -> float:
        return self.clean_eval + self.pgd


def hours(plan: Plan, costs: dict[str, Costs], clean_acc: float | None = None,
          robust_acc: float | None = None) -> Hours:
    """Accelerator-hours of the plan; full PGD without accuracies, early-exit PGD with them."""
    train = clean = pgd = overhead = 0.0
    for g in plan.groups:
        c = costs[g.group]
        train += g.trials * g.train_images * c.train_s_per_image
        attacked = g.total_points * g.pgd_images_per_point * g.pgd_radii
        clean += g.total_points * g.clean_images_per_point * c.eval_s_per_image
        pgd += attacked * (pgd_passes_per_image(g.pgd_steps, clean_acc, robust_acc) * c.pgd_s_per_iteration_image
                           + pgd_forwards_per_image(clean_acc, robust_acc) * c.eval_s_per_image)
        overhead += g.trials * c.trial_overhead_s
    return Hours(train / 3600, clean / 3600, pgd / 3600, overhead / 3600)


def estimate(plan: Plan, costs: dict[str, Costs], clean_acc: float = DEFAULT_CLEAN_ACC,
             robust_acc: float = DEFAULT_ROBUST_ACC) -> dict[str, Any]:
    full = hours(plan, costs)
    ours = hours(plan, costs, clean_acc, robust_acc)
    sensitivity = {r: hours(plan, costs, clean_acc, min(r, clean_acc)).total for r in SENSITIVITY}
    return {"full": full, "ours": ours, "sensitivity": sensitivity, "clean_acc": clean_acc, "robust_acc": robust_acc}


def _h(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} h"
    if value >= 1:
        return f"{value:.1f} h"
    return f"{value * 60:.1f} min"


def format_report(plan: Plan, costs: dict[str, Costs], result: dict[str, Any], spec_path: str = "") -> str:
    lines = []
    kind = "experiment" if plan.kind == "experiment" else "run"
    strategies = sorted({g.strategy for g in plan.groups})
    datasets = sorted({g.dataset for g in plan.groups}, key=[g.dataset for g in plan.groups].index)
    lines.append(f"{spec_path or plan.name} ({kind} spec): {len(plan.groups)} group(s) = {len(strategies)} "
                 f"strateg{'y' if len(strategies) == 1 else 'ies'} x {len(datasets)} dataset(s), {plan.trials} trial(s)")
    lines.append("")
    header = (f"{'dataset':<16}{'train/test imgs':>17}{'sizes':>7}{'steps':>8}{'points':>8}{'clean/pt':>10}"
              f"{'PGD img/pt':>11}{'trials':>8}")
    lines.append(header)
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
    lines.append("")
    sources = sorted({c.source for c in costs.values()})
    lines.append("costs: " + "; ".join(sources))
    shown = {}
    for g in plan.groups:
        shown.setdefault(g.strategy, costs[g.group])
    lines.append(f"{'  strategy':<14}{'train s/img':>13}{'clean s/img':>13}{'PGD s/iter-img':>16}{'trial start s':>15}")
    for name, c in shown.items():
        lines.append(f"  {name:<12}{c.train_s_per_image:>13.3g}{c.eval_s_per_image:>13.3g}"
                     f"{c.pgd_s_per_iteration_image:>16.3g}{c.trial_overhead_s:>15.3g}")
    full, ours = result["full"], result["ours"]
    lines.append("")
    lines.append(f"accelerator-hours       {'full PGD':>12}{'our early-exit PGD':>22}")
    for label, attr in (("training", "training"), ("clean evaluation", "clean_eval"), ("PGD evaluation", "pgd"),
                        ("trial start-up", "overhead")):
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
    if plan.concurrency:
        lines.append(f"wall clock at {plan.concurrency} trial(s) at once: about {_h(ours.total / plan.concurrency)} "
                     f"(full PGD {_h(full.total / plan.concurrency)})")
    return "\n".join(lines)


def to_json(plan: Plan, costs: dict[str, Costs], result: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": plan.name, "kind": plan.kind, "trials": plan.trials, "training_steps": plan.steps,
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
    }


def run_estimate(spec_path: str, overrides: dict[str, Any] | None = None, costs_file: str | None = None,
                 flags: dict[str, float | None] | None = None, clean_acc: float = DEFAULT_CLEAN_ACC,
                 robust_acc: float = DEFAULT_ROBUST_ACC, recalibrate: bool = False, as_json: bool = False,
                 log=None) -> str:
    plan = load_plan(spec_path, overrides)
    section = dict(plan.costs_section)
    if costs_file:
        data = load_yaml(costs_file)
        section.update(data.get("costs", data) if isinstance(data, dict) else {})
    if not 0 <= robust_acc <= clean_acc <= 1:
        raise SpecError(f"need 0 <= robust accuracy ({robust_acc}) <= clean accuracy ({clean_acc}) <= 1",
                        "--robust-acc")
    costs = resolve_costs(plan, section, flags or {}, recalibrate, log)
    result = estimate(plan, costs, clean_acc, robust_acc)
    if as_json:
        return json.dumps(to_json(plan, costs, result), indent=1)
    return format_report(plan, costs, result, spec_path)
