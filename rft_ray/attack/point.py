"""One kept evaluation point, attacked start to end: its weights loaded from the store's filesystem, its
run's evaluation images rebuilt from the run spec in the file as training built them, the clean verdict taken
as the evaluation took it, then every attack at every radius. Runs in this process or as one Ray task.

Threads: torch runs on `attack_threads()` threads, chosen as the training loop chooses them (a Ray task's CPUs;
in this process, the CPUs it may run on), not torch's default, which can count cores other work is using
(left at its default, an attack ran about 8x slower on a busy 2-core machine)."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rft_ray.attack.suite import REFERENCE, AttackBudget, PassCounter, robust_under
from rft_ray.config import RunSpec
from rft_ray.evaluation.evaluator import EvalSets
from rft_ray.evaluation.robustness import accuracy, clean_correct
from rft_ray.results.attacks import AttackError, accuracy_column, images_column, seconds_column
from rft_ray.results.checkpoints import checkpoint_metadata
from rft_ray.results.files import filesystem_for
from rft_ray.results.store import StoreError
from rft_ray.results.verdicts import PGD_SUBSET, Subset
from rft_ray.training.setup import autocast_dtype, check_pgd_precision, seed_everything
from rft_ray.training.weights import WeightsError, load_finetuned


@dataclass
class PointResult:
    run_id: str
    step: int
    columns: dict[str, float | int]  # the attack results file's columns for this point (rft_ray.results.attacks)
    images: int  # images attacked: the run's PGD subset
    clean_correct: int  # of them classified correctly clean (the most any attack can leave robust)
    robust: dict[str, int] = field(default_factory=dict)  # accuracy column -> images robust
    forward_backward: int = 0  # image passes (PassCounter): clean verdict, attacks and their judging
    forward_only: int = 0
    seconds: float = 0.0  # wall time of the whole point, loading included
    device: str = "cpu"
    threads: int = 0  # torch's CPU threads while attacking (attack_threads)
    # accuracy column -> per-image verdicts (1 = robust) in the PGD subset's order, and that subset's identity:
    # kept beside the results (`rft_ray.results.verdicts`, ATTACK_VERDICTS_DIR) to pair with training's.
    verdicts: dict[str, np.ndarray] = field(default_factory=dict)
    subset: Subset | None = None


def attack_threads() -> int:
    """The CPUs this attack was given: Ray sets OMP_NUM_THREADS to a task's CPUs; else the CPUs this process may
    run on (its affinity), as `resolve_workers` counts them for training."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))


def resolve_attack_device(choice: str) -> torch.device:
    if choice not in ("auto", "cpu", "cuda"):
        raise AttackError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise AttackError("--device cuda, but no GPU is visible to torch here; use auto or cpu")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


@functools.lru_cache(maxsize=2)
def _eval_sets(spec_json: str, image_size: int) -> EvalSets:
    """The run's evaluation subsets as its training drew them (OOD domains and validation left out: not
    attacked); cached, as
    a run's points share them."""
    from rft_ray.data import create_bundle

    spec = RunSpec.from_dict(json.loads(spec_json))
    bundle = create_bundle(spec.dataset, image_size, cache=True)
    return EvalSets.from_bundle(dataclasses.replace(bundle, ood={}, val_ood={}), spec, validation=False)


def eval_sets_of(spec: RunSpec) -> EvalSets:
    from rft_ray.training.setup import resolve_image_size

    return _eval_sets(json.dumps(spec.to_dict(), sort_keys=True, default=str), resolve_image_size(spec))


def attack_point(store_root: str, run_id: str, step: int, path: str, attacks: list[str], radii: list[float] | None,
                 device: str = "auto", budget: AttackBudget = REFERENCE) -> PointResult:
    """Every attack at every radius (None: the run's own PGD radius) on one kept point (module docstring)."""
    previous, threads = torch.get_num_threads(), attack_threads()
    torch.set_num_threads(threads)
    try:
        result = _attack_point(store_root, run_id, step, path, attacks, radii, device, budget)
    finally:
        torch.set_num_threads(previous)  # in this process, leave torch as it was found
    result.threads = threads
    return result


def _attack_point(store_root: str, run_id: str, step: int, path: str, attacks: list[str], radii: list[float] | None,
                  device: str, budget: AttackBudget) -> PointResult:
    started = time.perf_counter()
    target = resolve_attack_device(device)
    filesystem, _ = filesystem_for(store_root)
    try:
        metadata = checkpoint_metadata(filesystem, path)  # the header only: checked before the tensors are read
    except StoreError as err:
        raise WeightsError(str(err)) from err
    if metadata.get("run_id") not in (None, run_id) or metadata.get("step") not in (None, str(step)):
        raise AttackError(f"{path} holds the weights of run {metadata.get('run_id')!r} step "
                          f"{metadata.get('step')}, not of run {run_id!r} step {step}")
    model = load_finetuned(path, target, filesystem=filesystem)
    spec = RunSpec.from_dict(json.loads(metadata["spec"]))
    check_pgd_precision(spec.evaluation.pgd.precision, target)
    sets = eval_sets_of(spec)
    model.requires_grad_(False)  # gradients flow to the images only
    counter = PassCounter(model).eval()
    e = spec.evaluation
    test_ok = clean_correct(counter, sets.test.images, sets.test.labels, e.batch_size, target,
                            autocast_dtype(spec.training.precision, target))
    attacked, clean_ok = sets.test.take(sets.pgd_index), test_ok[sets.pgd_index]
    result = PointResult(run_id, int(step), {}, len(attacked), int(clean_ok.sum()), device=str(target),
                         subset=sets.subsets.get(PGD_SUBSET))
    for radius in radii or [e.pgd.eps]:
        for name in attacks:
            seed_everything(spec.dataset.split_seed)
            attack_started = time.perf_counter()
            robust = robust_under(name, counter, attacked, clean_ok, radius, spec, int(metadata["num_classes"]),
                                  target, budget)
            column = accuracy_column(name, radius)
            result.columns[column] = accuracy(robust)
            result.columns[images_column(name)] = len(robust)
            result.columns[seconds_column(name, radius)] = time.perf_counter() - attack_started
            result.robust[column] = int(robust.sum())
            result.verdicts[column] = robust.cpu().numpy().astype(bool)
    result.forward_backward, result.forward_only = counter.forward_backward, counter.forward_only
    result.seconds = time.perf_counter() - started
    return result
