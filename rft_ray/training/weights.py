"""The weights of a run's evaluation points, kept in the result store while it trains and loaded back in one call.

`CheckpointKeeper` is a loop observer (`rft_ray.training.plugins`) that `rft run` and every sweep trial (rank 0)
install. Per `output.keep_checkpoints` it saves, at evaluation points, the trainable parameters (the only ones
training changes: a few MB for the PEFT strategies, the whole model for `full`) as
`<store>/checkpoints/<run_id>/step-<step>.safetensors` (`ResultStore.checkpoint_path`, through the store's
filesystem: local, replaced atomically, or an object store):

- `frontier` (default): the points on the run's own (clean, PGD) Pareto front so far, on the split its selections
  read (`rft_ray.results.checkpoints.front_split`): (val_clean_acc, val_pgd_adv_acc) when the run measures
  validation and selects on it (search.select_on: validation, the default; `rft run` selects on validation),
  else (test_clean_acc, pgd_adv_acc); the files of points that fall off it are deleted, so the folder always
  holds exactly the front of the points so far;
- `all`: every point;
- `none`: nothing (and files an earlier run of the same run id left there are deleted, as its rows are replaced).

Each file's metadata holds the run spec (JSON), the run id, the step, the number and the ordered names of the
classes, the point's test metrics (and validation metrics where measured) and the split of the front its run
keeps (`front`), so

    model = load_finetuned(store.checkpoint_path(run_id, 400))

rebuilds the classifier that spec describes (the backbone's pretrained weights as its `model.source` says,
then the strategy's modules) and loads the saved tensors into it, every name checked, without executing code
from the file (safetensors holds tensors only). `rft_ray.results.checkpoints.list_checkpoints` lists a store's
files with their metrics without loading them.

A resumed run first sees its restored records: files of later points (an interrupted attempt got further) are
deleted and remade when those points are measured again, and the restored point's own file, if it is missing,
is saved from the restored model (which holds exactly that point's weights). Weights of earlier points cannot
be remade: when the interrupted attempt had deleted the file of a point that a later point displaced, and that
point is back on the front of the restored records, the run warns and names it (a deterministic rerun displaces
it again; otherwise the run ends without that file).
"""
from __future__ import annotations

import errno
import json
import warnings
from pathlib import Path

import pyarrow.fs as pafs
import torch

from rft_ray.config import RunSpec
from rft_ray.models.backbones import ImageClassifier, create_classifier
from rft_ray.models.strategies import create_strategy
from rft_ray.results.files import atomic_path, filesystem_for, is_uri, write_bytes
from rft_ray.results.checkpoints import (FORMAT, FRONT_COLUMNS, FRONT_KEY, checkpoint_metadata, front_split,
                                         front_steps)
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore

KEEP_MODES = ("none", "frontier", "all")


class WeightsError(ValueError):
    """A weights file that is not one of ours, or does not fit the model its spec builds."""


def kept_steps_for(mode: str, records: list[EvalRecord], select_on: str = "validation") -> set[int]:
    """The steps whose files a run keeping `mode` and selecting on `select_on` holds once it has measured
    `records` (`frontier`: the front of `front_split`'s split)."""
    if mode == "all":
        return {int(r.step) for r in records}
    return front_steps(records, front_split(records, select_on)) if mode == "frontier" else set()


class CheckpointKeeper:
    """Loop observer keeping the trainable weights of a run's evaluation points in the result store, per `mode`
    (module docstring); `select_on`, the split the run's selections read (search.select_on), says which front
    `frontier` keeps."""

    def __init__(self, store: ResultStore, run_id: str, mode: str = "frontier", select_on: str = "validation"):
        if mode not in KEEP_MODES:
            raise ValueError(f"output.keep_checkpoints must be one of {', '.join(KEEP_MODES)}, got {mode!r}")
        self.store, self.run_id, self.mode, self.select_on = store, run_id, mode, select_on
        self.context = None
        self.restored: list[EvalRecord] = []

    def on_run_start(self, context) -> None:
        self.context = context  # the model: the observer protocol itself passes records only
        if not self.restored:
            return
        records, self.restored = self.restored, []
        wanted, present = kept_steps_for(self.mode, records, self.select_on), self.store.checkpoints(self.run_id)
        if records[-1].step in wanted and records[-1].step not in present:
            self._save(records)  # the restored model holds exactly this point's weights
        lost = sorted(wanted - set(present) - {records[-1].step})
        if lost:
            warnings.warn(f"run {self.run_id}: the weights of step(s) {lost} (keep_checkpoints: {self.mode}) are "
                          f"not in {self.store.checkpoint_folder(self.run_id)} (an interrupted attempt deleted them) "
                          "and cannot be remade after a resume; unless later points displace them again, the run "
                          "ends without them", stacklevel=2)

    def records_changed(self, records: list[EvalRecord], checkpoint_dir=None) -> None:
        if not records:
            return
        wanted = kept_steps_for(self.mode, records, self.select_on)
        if self.context is None:
            self.restored = list(records)  # before on_run_start only a restored run's records are published
        elif records[-1].step in wanted:
            self._save(records)  # saved before others are deleted: a crash between leaves one file too many
        for step, path in self.store.checkpoints(self.run_id).items():
            if step not in wanted:
                try:
                    self.store.fs.delete_file(path)
                except FileNotFoundError:
                    pass

    def _save(self, records: list[EvalRecord]) -> None:
        """The last record's point, its metadata naming the front the run keeps so far."""
        from safetensors import SafetensorError
        from safetensors.torch import save, save_file

        record = records[-1]
        tensors, metadata = weights_content(self.context.model, self.context.spec, record,
                                            self.context.class_names, front_split(records, self.select_on))
        path = self.store.checkpoint_path(self.run_id, record.step)
        if self.store.local:  # straight to a temporary beside the file: no second copy of a whole model in memory
            with atomic_path(path) as temporary:  # WriteError, the previous file intact, when the disk is full
                self.store.fs.create_dir(self.store.checkpoint_folder(self.run_id), recursive=True)
                try:
                    save_file(tensors, str(temporary), metadata=metadata)
                except SafetensorError as err:  # how safetensors reports a failed write: "... I/O error: ..."
                    raise OSError(errno.EIO, str(err)) from err
        else:
            write_bytes(self.store.fs, path, save(tensors, metadata=metadata))


def weights_content(model, spec: RunSpec, record: EvalRecord, class_names: list[str] | None, front: str = "test"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A kept point's file: the trainable parameters (on the CPU) and the metadata `load_finetuned` and `rft
    predict` read: the run spec, run id, step, the number and the names of the classes, the point's metrics (the
    validation ones where measured), and `front`, the split whose front its run keeps (`front_split`)."""
    tensors = {name: param.detach().to("cpu", copy=True).contiguous()
               for name, param in model.named_parameters() if param.requires_grad}
    metadata = {"format": FORMAT, "spec": json.dumps(spec.to_dict()), "step": str(record.step),
                "num_classes": str(_num_classes(model)), "run_id": record.run_id,
                FRONT_KEY: front}
    for column in (*FRONT_COLUMNS["test"], *FRONT_COLUMNS["validation"]):
        if getattr(record, column) is not None:
            metadata[column] = repr(float(getattr(record, column)))
    if class_names:
        metadata["class_names"] = json.dumps(list(class_names))
    metadata["head_init"] = getattr(model, "head_init", "fresh")  # which head the run started from
    return tensors, metadata


def _num_classes(model) -> int:
    backbone = getattr(model, "backbone", model)
    return int(getattr(backbone, "num_classes", 0) or model.head.out_features)


def read_weights(path: str | Path, filesystem: pafs.FileSystem | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A weights file's tensors and metadata (safetensors: no code runs). `path` is local, a URI (`s3://...`),
    or a path on `filesystem` (as `ResultStore.checkpoints` gives them with `ResultStore.fs`)."""
    from safetensors import safe_open
    from safetensors.torch import load

    if filesystem is None and is_uri(str(path)):
        filesystem, path = filesystem_for(str(path))
    try:
        if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        else:
            metadata = checkpoint_metadata(filesystem, str(path))
            with filesystem.open_input_stream(str(path)) as handle:
                tensors = load(handle.read())
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for a bad header
        raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a weights file of rft-ray's CheckpointKeeper (no run spec in its metadata)")
    return tensors, metadata


def load_finetuned(path: str | Path, device: str | torch.device = "cpu",
                   filesystem: pafs.FileSystem | None = None) -> ImageClassifier:
    """The fine-tuned classifier of one kept evaluation point, in eval mode: built from the run spec in the
    file's metadata as the run built it, its trainable parameters replaced by the file's tensors. Every
    trainable parameter must be in the file and every tensor of the file must be one (WeightsError); for a
    strategy with phases (LP-FT), those of the phase the point was measured in. Its `class_names` are the
    run's classes in the order of its outputs (None in files kept before they were recorded)."""
    tensors, metadata = read_weights(path, filesystem)
    spec = RunSpec.from_dict(json.loads(metadata["spec"]))
    model = create_classifier(spec.model, int(metadata["num_classes"]), seed=spec.training.seed)
    strategy = create_strategy(spec.strategy.name, spec.strategy.options)
    strategy.apply(model)
    trainable = _phase_trainable(model, strategy, set(tensors))
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
    names = json.loads(metadata["class_names"]) if metadata.get("class_names") else None
    if names is not None and len(names) != int(metadata["num_classes"]):
        raise WeightsError(f"{path}: its metadata names {len(names)} classes for a model of "
                           f"{metadata['num_classes']} outputs")
    model.class_names = names
    return model.to(device).eval()


def _phase_trainable(model, strategy, names: set[str]) -> dict[str, torch.nn.Parameter]:
    """The parameters that train in the strategy's phase whose set is `names` (a phased strategy's point keeps
    what trains in its phase: LP-FT's probe points the head only), else those of its first phase."""
    first = None
    for index in range(len(strategy.phase_names)):
        strategy.enter_phase(model, index)
        trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
        if trainable.keys() == names:
            return trainable
        first = first if first is not None else trainable
    strategy.enter_phase(model, 0)
    return first
