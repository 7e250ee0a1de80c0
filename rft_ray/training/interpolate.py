"""WiSE-FT (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"): evaluate weight
interpolations between a run's starting model and its kept checkpoints, points on the frontier at no training
cost.

theta(alpha) = theta0 + alpha * (theta_ft - theta0) over the parameters a checkpoint holds (its run's trained
ones), where theta0 is the run's starting value: the model rebuilt from the run spec in the file's metadata as
the run built it (pretrained backbone, the strategy's modules, its fresh head seeded with training.seed), and
theta_ft the file's tensors. For `lp_ft` points of the fine-tuning phase the start is the probed model at the
phase boundary (the boundary point's kept head; the backbone is the step-0 one, which probing leaves as it
is), not step 0. Where a plain lerp would not scale the learned change, the strategy says so per parameter
(`Strategy.interpolation_rule`, described in words by `Strategy.interpolation`): for LoRA the change is
scaling * B @ A with B zero at step 0, so B moves alpha of the way and A stays fine-tuned, and each update is
exactly alpha times the fine-tuned one; adapters and Compacter scale their zero-started up-projections alike.
`torch.lerp` makes alpha 0 and alpha 1 exactly the start and the fine-tuned values (no rounding).

The head (`--head`): `fine_tuned` (default) keeps the checkpoint's head at every alpha. There is no zero-shot
head here, unlike CLIP's WiSE-FT: the starting head is a new, random one, and moving towards it mixes random
logits into every alpha. `interpolate` moves the head too (alpha 0 is then exactly the starting model); for
`linear`, which trains the head only, that is the only mode in which alpha changes anything.

Each (checkpoint, alpha) is measured by the run's own `evaluate` on the run's own seeded sets (clean, PGD, OOD
and validation as its spec says, on its device and precision), so alpha 1 reproduces the run's own row of that
step. The rows go to the sub-store `<store>/interpolated` (layout: `analysis.wise`), never to the runs' own
files; interpolating a checkpoint again in the same head mode replaces the rows of the alphas it measures again
and keeps the others (the mode is in each file's metadata, `WISE_HEAD_KEY`; another mode replaces them all),
and files of checkpoints not chosen this time are kept (a narrower rerun deletes nothing). The command holds
the lease of each run it interpolates (`ResultStore.lease`), taken after the store and the sub-store are
checked and before any model is built. A row copies the source row's run facts (`wall_seconds`: the training
time the checkpoint cost) and has `train_loss` NaN (nothing trained) and `eval_seconds` its own evaluation's
time.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Callable, Iterable

import torch

from analysis.wise import wise_root, wise_run_id
from rft_ray.config import RunSpec
from rft_ray.evaluation.evaluator import EvalSets, evaluate, verdict_subset
from rft_ray.models.strategies import Strategy, create_strategy
from rft_ray.models.strategies.base import KEEP_FINETUNED
from rft_ray.results.checkpoints import KeptPoint, select_kept_points
from rft_ray.results.lease import holding
from rft_ray.results.record import VALIDATION_COUNTS, VALIDATION_METRICS, EvalRecord
from rft_ray.results.store import ResultStore, StoreError
from rft_ray.results.verdicts import RunVerdicts
from rft_ray.training.setup import Run
from rft_ray.training.weights import WeightsError, read_weights

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
HEAD_MODES = ("fine_tuned", "interpolate")  # --head: keep the checkpoint's head at every alpha, or interpolate it
WISE_HEAD_KEY = "rft.wise_head"  # an interpolated file's metadata: the head mode of its rows


class InterpolationError(ValueError):
    """Input `rft interpolate` cannot work with (bad alphas, nothing to interpolate)."""


def parse_alphas(text: str) -> tuple[float, ...]:
    """'0,0.25,1' -> (0.0, 0.25, 1.0): sorted, duplicates dropped; each a number in [0, 1]."""
    values = []
    for item in str(text).split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise InterpolationError(f"--alphas takes comma-separated numbers in [0, 1] such as 0,0.25,0.5,0.75,1; "
                                     f"{item.strip()!r} is not a number") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InterpolationError(f"--alphas: {item.strip()} is outside [0, 1] (0: the step-0 model, 1: the "
                                     "fine-tuned checkpoint; extrapolation is not supported)")
        values.append(value)
    return tuple(sorted(set(values)))


class Interpolator:
    """A run's step-0 model whose trained parameters are set to theta(alpha) of one checkpoint at a time;
    `head` "fine_tuned" keeps the head's parameters at the checkpoint's values for every alpha."""

    def __init__(self, model: torch.nn.Module, strategy: Strategy, head: str = "interpolate"):
        if head not in HEAD_MODES:
            raise InterpolationError(f"--head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
        self.model, self.strategy, self.head = model, strategy, head
        self.params = dict(model.named_parameters())
        heads = {id(p) for p in model.head.parameters()}
        self.head_names = {name for name, p in self.params.items() if id(p) in heads}
        self.step0: dict[str, torch.Tensor] = {}  # step-0 values of every parameter a checkpoint set so far
        self.start: dict[str, torch.Tensor] = {}  # theta0 of the current checkpoint's parameters
        self.finetuned: dict[str, torch.Tensor] = {}

    def load(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint",
             start: dict[str, torch.Tensor] | None = None) -> None:
        """Take a checkpoint's tensors (every parameter the model trains at step 0 and only parameters);
        parameters an earlier checkpoint set and this one lacks go back to step 0. `start` gives theta0 of some
        parameters (lp_ft's probed head); the others start from their step-0 values."""
        unexpected = sorted(tensors.keys() - self.params.keys())
        missing = sorted(n for n, p in self.params.items() if p.requires_grad and n not in tensors)
        if missing or unexpected:
            raise WeightsError(f"{source} does not fit its run's {self.strategy.name} model: missing "
                               f"{missing[:3] or 'none'}, unexpected {unexpected[:3] or 'none'}")
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(self.params[name].shape):
                raise WeightsError(f"{source}: {name} has shape {tuple(tensor.shape)}, the model's is "
                                   f"{tuple(self.params[name].shape)}")
        with torch.no_grad():
            for name in self.step0.keys() - tensors.keys():
                self.params[name].copy_(self.step0[name])
            for name in tensors:
                if name not in self.step0:
                    self.step0[name] = self.params[name].detach().clone()
        place = {name: (self.params[name].device, self.params[name].dtype) for name in tensors}
        self.start = {name: (start or {}).get(name, self.step0[name]).to(*place[name]) for name in tensors}
        self.finetuned = {name: t.to(*place[name]) for name, t in tensors.items()}

    def set_alpha(self, alpha: float) -> None:
        with torch.no_grad():
            for name, tuned in self.finetuned.items():
                if self.strategy.interpolation_rule(name) == KEEP_FINETUNED or (
                        self.head == "fine_tuned" and name in self.head_names):
                    self.params[name].copy_(tuned)
                else:  # lerp: exactly the start at 0 and exactly the fine-tuned value at 1
                    self.params[name].copy_(torch.lerp(self.start[name], tuned, float(alpha)))


Source = KeptPoint  # one kept checkpoint to interpolate: its file on the store's filesystem and its run's row


def choose_checkpoints(store: ResultStore, runs: str = "*", on: str = "frontier"
                       ) -> tuple[list[Source], list[str]]:
    """The kept checkpoints of the runs matching the glob `runs`, chosen by `on` as `rft attack` chooses
    (`select_kept_points`: `final` is the last kept step), and notes on points asked for that cannot be taken;
    a kept file whose step has no row is noted and left out (an interpolated row copies its source row).
    InterpolationError for a bad `on` or `runs`, and when nothing is left to interpolate."""
    try:
        points, notes = select_kept_points(store, on, runs)
    except StoreError as err:
        raise InterpolationError(str(err)) from err
    chosen = []
    for point in points:
        if point.record is None:
            notes.append(f"run {point.run_id}: the checkpoint of step {point.step} has no row in the run's file "
                         "(its interpolations would have no run facts to copy); skipped")
        else:
            chosen.append(point)
    if not chosen:
        raise InterpolationError(
            f"no kept checkpoint to interpolate in {store.root!r} ({on} points of the runs matching {runs!r}"
            f"{'; ' + '; '.join(notes) if notes else ''}); runs keep weights in <store>/checkpoints with "
            "output.keep_checkpoints frontier or all")
    return chosen, notes


def interpolated_record(source: EvalRecord, step: int, alpha: float, metrics: dict, eval_seconds: float) -> EvalRecord:
    unmeasured = {name: None for name in (*VALIDATION_METRICS, *VALIDATION_COUNTS.values())}  # not the source's
    return dataclasses.replace(source, run_id=wise_run_id(source.run_id, step), train_loss=float("nan"),
                               eval_seconds=eval_seconds, measured_at=time.time(), wise_alpha=float(alpha),
                               source_run_id=source.run_id, **{**unmeasured, **metrics})


def _build(metadata: dict[str, str], device: str | None) -> tuple[RunSpec, Run]:
    spec = RunSpec.from_dict(json.loads(metadata["spec"]))
    spec.training.compile = False  # eager: parameters change in place between alphas
    if device is not None:
        spec.training.device = device
    return spec, Run.build(spec)


def interpolate_store(root: str, alphas: Iterable[float] = DEFAULT_ALPHAS, *, on: str = "frontier",
                      runs: str = "*", device: str | None = None, head: str = "fine_tuned",
                      log: Callable[[str], None] = print) -> list[EvalRecord]:
    """Evaluate every chosen checkpoint (`choose_checkpoints`) at every alpha; write and return the rows."""
    alphas = tuple(sorted(set(float(a) for a in alphas)))
    if not alphas or any(not (0.0 <= a <= 1.0) for a in alphas):
        raise InterpolationError(f"alphas must be numbers in [0, 1], got {list(alphas)}")
    if head not in HEAD_MODES:
        raise InterpolationError(f"--head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
    store = ResultStore(root).must_exist()
    sources, notes = choose_checkpoints(store, runs, on)
    for note in notes:
        log(f"note: {note}")
    out_store = ResultStore(wise_root(root))
    out_store.ensure_writable()
    by_run: dict[str, list[Source]] = {}
    for source in sources:
        by_run.setdefault(source.run_id, []).append(source)
    with holding([store.lease(run_id, "rft interpolate") for run_id in by_run]) as leases:
        return [row for (run_id, run_sources), lease in zip(by_run.items(), leases)
                for row in _interpolate_run(store, out_store, run_id, run_sources, alphas, device, head, lease.check,
                                            log)]


def _interpolate_run(store: ResultStore, out_store: ResultStore, run_id: str, sources: list[Source],
                     alphas: tuple[float, ...], device: str | None, head: str, guard: Callable[[], None],
                     log: Callable[[str], None]) -> list[EvalRecord]:
    """One run's chosen checkpoints at every alpha; each checkpoint's file keeps its rows of other alphas."""
    written: list[EvalRecord] = []
    built: tuple[str, RunSpec, Run, Interpolator, EvalSets] | None = None
    for source in sources:
        tensors, metadata = read_weights(source.path, store.fs)
        if built is None or built[0] != metadata["spec"]:
            built = None  # free the previous model first
            spec, run = _build(metadata, device)
            strategy = create_strategy(spec.strategy.name, spec.strategy.options)
            built = (metadata["spec"], spec, run, Interpolator(run.model, strategy, head),
                     EvalSets.from_bundle(run.bundle, spec))
        _, spec, run, interpolator, sets = built
        if int(metadata.get("num_classes", run.bundle.num_classes)) != run.bundle.num_classes:
            raise WeightsError(f"{source.path}: {metadata['num_classes']} classes, its dataset has "
                               f"{run.bundle.num_classes}")
        interpolator.load(tensors, source.path, _phase_start(store, run_id, source, run, interpolator))
        log(f"run {run_id} step {source.step} ({spec.strategy.name}: alpha scales "
            f"{interpolator.strategy.interpolation}; head {_head_words(head, spec.strategy.name)})")
        rows, measured = [], {}
        for alpha in alphas:
            interpolator.set_alpha(alpha)
            began = time.perf_counter()
            measured[(source.step, alpha)] = verdicts = {}
            metrics = evaluate(run.model, sets, spec, run.device, run.dtype, verdicts=verdicts)
            seconds = time.perf_counter() - began
            rows.append(interpolated_record(source.record, source.step, alpha, metrics, seconds))
            log(f"  alpha {alpha:<5g} clean {metrics['test_clean_acc']:.4f}  PGD {metrics['pgd_adv_acc']:.4f}  "
                f"OOD {metrics['test_ood_accuracy']:.4f}  ({seconds:.1f} s)")
        name = wise_run_id(run_id, source.step)
        earlier = out_store.read_run(name)
        same_mode = out_store.file_metadata(name).get(WISE_HEAD_KEY) == head
        if earlier and not same_mode:
            log(f"  {name}: its rows were measured with another head mode (or before the mode was kept): all "
                "replaced")
            earlier = []
        kept = [r for r in earlier if r.wise_alpha not in alphas]
        if earlier:
            again = sorted({r.wise_alpha for r in earlier} - {r.wise_alpha for r in kept})
            log(f"  {name}: " + (f"replaces its rows of alpha {', '.join(f'{a:g}' for a in again)}; " if again else "")
                + (f"keeps those of alpha {', '.join(f'{r.wise_alpha:g}' for r in kept)}" if kept else "keeps no other"))
        guard()
        # the per-image verdicts first (as a run's), keyed (step, alpha); those of kept alphas stay
        out_store.write_verdicts(name, _merged_verdicts(out_store, name, measured, {r.wise_alpha for r in kept},
                                                        sets))
        out_store.write_run(name, sorted(kept + rows, key=lambda r: r.wise_alpha), metadata={WISE_HEAD_KEY: head})
        written += rows
    return written


def _merged_verdicts(out_store: ResultStore, name: str, measured: dict, kept_alphas: set[float], sets: EvalSets
                     ) -> RunVerdicts:
    """The interpolated file's verdicts: this measurement's, and the earlier file's of the alphas it keeps."""
    earlier = out_store.read_verdicts(name)
    points = {key: v for key, v in (earlier.points.items() if earlier is not None else [])
              if isinstance(key, tuple) and key[1] in kept_alphas}
    points.update(measured)
    metrics = {metric for verdicts in points.values() for metric in verdicts}
    return RunVerdicts(points, {m: verdict_subset(m) for m in metrics}, dict(sets.subsets))


def _head_words(head: str, strategy: str) -> str:
    if head == "interpolate":
        return "interpolated from its starting value"
    if strategy == "linear":
        return ("kept fine-tuned at every alpha: linear trains the head only, so every alpha is the checkpoint "
                "(--head interpolate moves it)")
    return "kept fine-tuned at every alpha"


def _phase_start(store: ResultStore, run_id: str, source: Source, run: Run, interpolator: Interpolator
                 ) -> dict[str, torch.Tensor] | None:
    """theta0 of a point of a later phase: for lp_ft's fine-tuning phase, the probed head of the boundary point
    (needed only when the head is interpolated; InterpolationError when that point's weights were not kept)."""
    phases = interpolator.strategy.phases(run.total_steps, run.spec.training.lr)
    if len(phases) < 2 or source.step <= phases[1].start or interpolator.head != "interpolate":
        return None
    boundary = phases[1].start
    path = store.checkpoints(run_id).get(boundary)
    if path is None:
        raise InterpolationError(
            f"run {run_id}: interpolating the head of its {phases[1].name} point at step {source.step} starts from "
            f"the probed model at the phase boundary, step {boundary}, whose weights were not kept; keep them "
            "(output.keep_checkpoints all) or use --head fine_tuned")
    tensors, _ = read_weights(path, store.fs)
    return {name: tensor for name, tensor in tensors.items() if name in interpolator.head_names}
