"""The weights of a run's Pareto-optimal evaluation points, kept while it trains and loaded back in one call.

`FrontierWeights` is a loop observer (`rft_ray.training.plugins`): at each evaluation point on the run's own
(test_clean_acc, pgd_adv_acc) Pareto front so far, it saves the trainable parameters (the only ones training
changes: a few MB for the PEFT strategies, the whole model for `full`) as `step-<step>.safetensors` in its
folder, and deletes the files of points that fell off the front. Each file's metadata holds the run spec
(JSON), the step, the number of classes and the point's two metrics, so

    model = load_finetuned("step-400.safetensors")

rebuilds the classifier that spec describes (the backbone's pretrained weights as its `model.source` says,
then the strategy's modules) and loads the saved tensors into it, every name checked, without executing code
from the file (safetensors holds tensors only). On a sweep, the files ride in each reported Ray Train
checkpoint and reach the trial's MLflow run under `weights/` (`rft_ray.tracking.artifacts`).
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch

from rft_ray.config import RunSpec
from rft_ray.models.backbones import ImageClassifier, create_classifier
from rft_ray.models.strategies import create_strategy
from rft_ray.results.files import atomic_path
from rft_ray.results.record import EvalRecord

WEIGHTS_DIR = "weights"  # the folder's name inside a run's checkpoint folder, and the MLflow artifact path
FORMAT = "rft-ray frontier weights 1"
_FILE = re.compile(r"^step-(\d+)\.safetensors$")


class WeightsError(ValueError):
    """A weights file that is not one of ours, or does not fit the model its spec builds."""


def weights_name(step: int) -> str:
    return f"step-{int(step)}.safetensors"


def kept_steps(folder: Path) -> dict[int, Path]:
    """The weight files in `folder`, by step."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): path for path in folder.iterdir() if (m := _FILE.match(path.name))}


def front_steps(records: list[EvalRecord]) -> set[int]:
    """The steps of the records on their (test_clean_acc, pgd_adv_acc) Pareto front (`analysis.frontier`);
    of points measured alike, the earliest, so a later tie never replaces a kept file."""
    from analysis.frontier import pareto_frontier

    points = [(float(r.test_clean_acc), float(r.pgd_adv_acc), int(r.step)) for r in records
              if math.isfinite(r.test_clean_acc) and math.isfinite(r.pgd_adv_acc)]
    front = {tuple(p) for p in pareto_frontier([(a, b) for a, b, _ in points]).tolist()}
    first: dict[tuple[float, float], int] = {}
    for acc, rob, step in sorted(points, key=lambda p: p[2]):
        if (acc, rob) in front:
            first.setdefault((acc, rob), step)
    return set(first.values())


class FrontierWeights:
    """Loop observer keeping the trainable weights of the run's Pareto-optimal points in `folder` (module
    docstring). `previous`: the folder of the checkpoint a resumed run restarts from, whose files of points
    still on the front are carried over (the model then holds only the latest point's weights)."""

    def __init__(self, folder: str | Path, previous: str | Path | None = None):
        self.folder = Path(folder)
        self.previous = Path(previous) if previous is not None else None
        self.context = None

    def on_run_start(self, context) -> None:
        self.context = context  # the model: the observer protocol itself passes records only

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        if not records:
            return
        front = front_steps(records)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.previous is not None:
            for step, path in kept_steps(self.previous).items():
                if step in front and not (self.folder / path.name).exists():
                    shutil.copyfile(path, self.folder / path.name)
            self.previous = None
        latest = records[-1]
        # Before on_run_start only a restored run's records are published; its weights come from `previous`.
        if self.context is not None and latest.step in front:
            self._save(latest)
        for step, path in kept_steps(self.folder).items():
            if step not in front:
                path.unlink(missing_ok=True)

    def _save(self, record: EvalRecord) -> None:
        from safetensors.torch import save_file

        model = self.context.model
        tensors = {name: param.detach().to("cpu", copy=True).contiguous()
                   for name, param in model.named_parameters() if param.requires_grad}
        metadata = {"format": FORMAT, "spec": json.dumps(self.context.spec.to_dict()), "step": str(record.step),
                    "num_classes": str(_num_classes(model)), "run_id": record.run_id,
                    "test_clean_acc": repr(float(record.test_clean_acc)),
                    "pgd_adv_acc": repr(float(record.pgd_adv_acc))}
        with atomic_path(self.folder / weights_name(record.step)) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)


def _num_classes(model) -> int:
    backbone = getattr(model, "backbone", model)
    return int(getattr(backbone, "num_classes", 0) or model.head.out_features)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A weights file's tensors and metadata (safetensors: no code runs)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for a bad header
        raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a weights file of rft-ray's FrontierWeights (no run spec in its metadata)")
    return tensors, metadata


def load_finetuned(path: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """The fine-tuned classifier of one kept evaluation point, in eval mode: built from the run spec in the
    file's metadata as the run built it, its trainable parameters replaced by the file's tensors. Every
    trainable parameter must be in the file and every tensor of the file must be one (WeightsError)."""
    tensors, metadata = read_weights(path)
    spec = RunSpec.from_dict(json.loads(metadata["spec"]))
    model = create_classifier(spec.model, int(metadata["num_classes"]), seed=spec.training.seed)
    create_strategy(spec.strategy.name, spec.strategy.options).apply(model)
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    missing, unexpected = sorted(trainable.keys() - tensors.keys()), sorted(tensors.keys() - trainable.keys())
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit the {spec.strategy.name} model of its spec: missing "
                           f"{missing[:3] or 'none'}, unexpected {unexpected[:3] or 'none'}")
    with torch.no_grad():
        for name, param in trainable.items():
            if param.shape != tensors[name].shape:
                raise WeightsError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, the model's is "
                                   f"{tuple(param.shape)}")
            param.copy_(tensors[name])
    return model.to(device).eval()
