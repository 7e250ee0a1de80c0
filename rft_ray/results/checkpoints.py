"""The kept checkpoints of a result store (`output.keep_checkpoints`), listed without loading a tensor.

A run keeps the trainable weights of some evaluation points as `<store>/checkpoints/<run_id>/step-<step>
.safetensors` (`ResultStore.checkpoint_folder`; written by `rft_ray.training.weights.CheckpointKeeper`, loaded
with `rft_ray.training.weights.load_finetuned`). Each file's safetensors metadata names its run, step and the
point's two metrics, so listing reads only each file's header: the 8-byte little-endian header length, then
that many bytes of JSON whose `__metadata__` holds those strings (the safetensors format), on any filesystem
pyarrow reaches and without downloading the tensors.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import pyarrow.fs as pafs

from rft_ray.results.store import CHECKPOINTS_DIR, ResultStore, StoreError, check_run_id

_MAX_HEADER = 100_000_000  # safetensors' own limit on a header's size


@dataclass(frozen=True)
class KeptCheckpoint:
    run_id: str
    step: int
    path: str  # on the store's filesystem (`ResultStore.fs`): a local path, or `bucket/key` for object stores
    size_bytes: int
    test_clean_acc: float  # the point's metrics as its run measured them, from the file's metadata
    pgd_adv_acc: float
    strategy: str


def checkpoint_metadata(filesystem: pafs.FileSystem, path: str) -> dict[str, str]:
    """The safetensors metadata of the file at `path` (StoreError when it is not a safetensors file)."""
    try:
        with filesystem.open_input_file(path) as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= _MAX_HEADER:
                raise StoreError(f"checkpoint {path} is not a safetensors file (header length {size})")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as err:
        if isinstance(err, StoreError):
            raise
        raise StoreError(f"checkpoint {path} cannot be read as safetensors: {err}") from err
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def list_checkpoints(store: ResultStore, run_ids: list[str] | None = None) -> list[KeptCheckpoint]:
    """Every kept checkpoint in the store (or of `run_ids`), by run then step, with the metrics its file names."""
    if run_ids is None:
        infos = store.fs.get_file_info(pafs.FileSelector(f"{store.path}/{CHECKPOINTS_DIR}", allow_not_found=True))
        run_ids = sorted(info.base_name for info in infos
                         if info.type == pafs.FileType.Directory and _is_run_id(info.base_name))
    kept = []
    for run_id in run_ids:
        for step, path in store.checkpoints(run_id).items():
            metadata = checkpoint_metadata(store.fs, path)
            spec = json.loads(metadata.get("spec") or "{}")
            kept.append(KeptCheckpoint(
                run_id, step, path, store.fs.get_file_info(path).size or 0,
                float(metadata.get("test_clean_acc", "nan")), float(metadata.get("pgd_adv_acc", "nan")),
                str((spec.get("strategy") or {}).get("name", ""))))
    return kept


def _is_run_id(name: str) -> bool:
    try:
        return bool(check_run_id(name))
    except StoreError:
        return False  # a folder someone else put there


def describe_checkpoints(kept: list[KeptCheckpoint]) -> str:
    """One line per kept checkpoint, for commands that list them: run, step, metrics, size, path."""
    return "\n".join(f"{c.run_id:<40} step {c.step:>7}  clean {c.test_clean_acc:.3f}  PGD {c.pgd_adv_acc:.3f}  "
                     f"{c.size_bytes / 1e6:>9.2f} MB  {c.path}" for c in kept)
