"""One resumable checkpoint per run, replaced whole at every evaluation point (never appended to).

It holds the trainable weights, optimizer, scheduler and RNG state, the records so far, the spec and the
strategy's phase (`Strategy.phases`; the weights, optimizer and schedule are that phase's), so a resumed run
continues at the same step, in the same phase, and produces the same subsequent records.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from rft_ray.config import RunSpec, SpecError
from rft_ray.results.files import atomic_path, write_failed

CHECKPOINT_FILE = "checkpoint.pt"
# Spec sections a resumed run may change without invalidating its checkpoint.
RESUMABLE_CHANGES = ("output",)
STATE_KEYS = ("step", "elapsed", "trainable", "optimizer", "scheduler", "torch_rng", "records", "spec_fingerprint")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (damaged, or not one of ours); the message names it."""


# Settings of how the workers hold the model, not of what they compute: a checkpoint crosses between ddp and fsdp.
RESUMABLE_TRAINING = ("sharding",)


def spec_fingerprint(spec: RunSpec) -> dict:
    plain = spec.to_dict()
    plain["training"] = {k: v for k, v in plain["training"].items() if k not in RESUMABLE_TRAINING}
    return {k: v for k, v in plain.items() if k not in RESUMABLE_CHANGES}


def checkpoint_state(step: int, elapsed: float, model, optimizer_state: dict, scheduler, records: list,
                     spec: RunSpec, phase: int = 0) -> dict:
    """What a checkpoint holds: trainable weights, the optimizer's state (an unsharded AdamW's `state_dict()`),
    scheduler and RNG state, records, the spec, and the index of the phase whose trainable weights, optimizer and
    scheduler these are."""
    return {"step": step, "elapsed": elapsed, "phase": phase,
            "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "records": [r.to_row() for r in records],
            "spec": spec.to_dict(), "spec_fingerprint": spec_fingerprint(spec)}


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Replace the run's checkpoint whole (WriteError, the previous one intact, when it cannot be written)."""
    final = directory / CHECKPOINT_FILE
    with atomic_path(final) as temporary:  # one checkpoint per run, replaced whole, never half-written
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_failed(err, final) from err
        with open(temporary, "wb") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as err:  # torch reports a failed write as its own error, the OS's as its context
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from err
                raise
    return final


def load_checkpoint(directory: Path, spec: RunSpec) -> dict | None:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises what its unpickler and zip reader raise
        why = ("it holds objects other than tensors and plain data, refused since loading them could run code"
               if isinstance(err, pickle.UnpicklingError) else
               f"{(str(err).strip().splitlines() or [type(err).__name__])[0].split('. ')[0]}: it is damaged (a copy "
               "cut short, a full disk?)")
        raise CheckpointError(f"checkpoint {path} cannot be read ({why}). The run's rows and kept weights in the "
                              "store are untouched; point output.checkpoints at an intact copy, or start the run "
                              "again from step 0 with --restart (it lists what it replaces)") from err
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this platform (no {', '.join(missing)}); "
                              "point output.checkpoints elsewhere, or start the run again with --restart")
    saved = state.get("spec_fingerprint", {})
    current = spec_fingerprint(spec)
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise SpecError(f"checkpoint {path} was made by a run with different settings in {', '.join(changed)}; "
                        "use another run id or output.checkpoints, or delete the checkpoint", "output.run_id")
    return state
