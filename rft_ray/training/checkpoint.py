"""One resumable checkpoint per run, replaced whole at every evaluation point (never appended to).

It holds the trainable weights, optimizer, scheduler and RNG state, the records so far, the spec and the
strategy's phase (`Strategy.phases`; the weights, optimizer and schedule are that phase's), so a resumed run
continues at the same step, in the same phase, and produces the same subsequent records.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rft_ray.config import RunSpec, SpecError
from rft_ray.results.files import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"
# Spec sections a resumed run may change without invalidating its checkpoint.
RESUMABLE_CHANGES = ("output",)


def spec_fingerprint(spec: RunSpec) -> dict:
    plain = spec.to_dict()
    return {k: v for k, v in plain.items() if k not in RESUMABLE_CHANGES}


def checkpoint_state(step: int, elapsed: float, model, optimizer, scheduler, records: list, spec: RunSpec,
                     phase: int = 0) -> dict:
    """What a checkpoint holds: trainable weights, optimizer, scheduler and RNG state, records, the spec, and
    the index of the phase whose trainable weights, optimizer and scheduler these are."""
    return {"step": step, "elapsed": elapsed, "phase": phase,
            "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "records": [r.to_row() for r in records],
            "spec": spec.to_dict(), "spec_fingerprint": spec_fingerprint(spec)}


def save_checkpoint(directory: Path, state: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_FILE
    with atomic_path(final) as temporary:  # one checkpoint per run, replaced whole, never half-written
        torch.save(state, temporary)
    return final


def load_checkpoint(directory: Path, spec: RunSpec) -> dict | None:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"checkpoint {path} cannot be read ({err}); delete it to start the run afresh") from err
    saved = state.get("spec_fingerprint", {})
    current = spec_fingerprint(spec)
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise SpecError(f"checkpoint {path} was made by a run with different settings in {', '.join(changed)}; "
                        "use another run id or output.checkpoints, or delete the checkpoint", "output.run_id")
    return state
