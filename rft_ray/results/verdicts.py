"""Per-image verdicts: which images each evaluation point got right, kept beside the run's records so that
intervals and paired comparisons can be computed from the images themselves (`analysis.bootstrap`).

One sidecar file per run, `<store>/verdicts/<run_id>.parquet`, on any filesystem the store supports; one row per
(step, metric):

    step     the evaluation point
    metric   the record's column the verdicts are behind: test_clean_acc, pgd_adv_acc, pgd_adv_acc/<radius>,
             ood_acc/<domain>, val_clean_acc, val_pgd_adv_acc, val_ood_acc/<domain>
    subset   the images, by name: test, test/pgd, ood/<domain>, val, val/pgd, val/ood/<domain>
    n        how many images (bits)
    bits     numpy.packbits of the booleans, in the subset's image order (1 = correct / robust)

Image identity (the file's schema metadata, `rft.verdict_subsets`): per subset its image indices into the
dataset's split (the seeded, class-stratified draw; the PGD subsets index the test or validation split too) and a
fingerprint (SHA-256 of the indices, labels and pixels). Every run of a dataset with the same `split_seed` and
subset sizes draws the same images, so the fingerprints agree and two runs' verdicts pair image by image; where
they differ, pairing is refused (`analysis.bootstrap`).

Written before the run's own file at every point (`rft_ray.training.runner.StoreObserver`), replaced whole and
atomically (a temporary renamed locally, one object write on object stores): every row a reader sees in the run's
file has its verdicts, and a sidecar never holds a step the run's file has dropped for longer than one point.
The folder is not a run: `ResultStore.run_ids` lists the root's files only.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rft_ray.results.files import read_bytes, write_bytes

VERDICTS_DIR = "verdicts"
SUBSETS_KEY = b"rft.verdict_subsets"
_SCHEMA = pa.schema([("step", pa.int64()), ("metric", pa.string()), ("subset", pa.string()), ("n", pa.int32()),
                     ("bits", pa.binary())])


class VerdictError(ValueError):
    """A verdict file that cannot be read, or verdicts that do not pair."""


@dataclass(frozen=True)
class Subset:
    """The images a metric is measured on: indices into the split, and the fingerprint of those images."""

    indices: np.ndarray  # int64
    fingerprint: str

    @classmethod
    def of(cls, indices, labels, images=None) -> "Subset":
        """The identity of a subset from its split indices, labels and (optionally) pixels."""
        idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
        digest = hashlib.sha256(idx.tobytes())
        digest.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
        if images is not None:
            digest.update(np.ascontiguousarray(np.asarray(images)).tobytes())
        return cls(idx, digest.hexdigest())

    def to_json(self) -> dict:
        packed = base64.b64encode(zlib.compress(np.diff(self.indices, prepend=0).astype("<i8").tobytes())).decode()
        return {"n": int(len(self.indices)), "fingerprint": self.fingerprint, "indices": packed}

    @classmethod
    def from_json(cls, value: dict) -> "Subset":
        deltas = np.frombuffer(zlib.decompress(base64.b64decode(value["indices"])), dtype="<i8")
        return cls(np.cumsum(deltas).astype(np.int64), str(value["fingerprint"]))


@dataclass
class RunVerdicts:
    """One run's verdicts: step -> metric -> booleans, the subset of each metric, and each subset's identity."""

    points: dict[int, dict[str, np.ndarray]]
    metric_subsets: dict[str, str]
    subsets: dict[str, Subset]

    def subset_of(self, metric: str) -> Subset:
        return self.subsets[self.metric_subsets[metric]]


def verdicts_path(root_path: str, run_id: str) -> str:
    return f"{root_path}/{VERDICTS_DIR}/{run_id}.parquet"


def encode(verdicts: RunVerdicts) -> bytes:
    """The sidecar file's bytes (Parquet; module docstring)."""
    rows = {name: [] for name in _SCHEMA.names}
    for step in sorted(verdicts.points):
        for metric, ok in sorted(verdicts.points[step].items()):
            ok = np.asarray(ok, dtype=bool)
            rows["step"].append(int(step))
            rows["metric"].append(metric)
            rows["subset"].append(verdicts.metric_subsets[metric])
            rows["n"].append(int(len(ok)))
            rows["bits"].append(np.packbits(ok).tobytes())
    table = pa.table(rows, schema=_SCHEMA)
    subsets = {name: subset.to_json() for name, subset in sorted(verdicts.subsets.items())}
    table = table.replace_schema_metadata({SUBSETS_KEY: json.dumps(subsets)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def decode(data: bytes, where: str) -> RunVerdicts:
    try:
        table = pq.read_table(io.BytesIO(data))
        subsets = {name: Subset.from_json(v) for name, v in
                   json.loads((table.schema.metadata or {})[SUBSETS_KEY]).items()}
    except (pa.ArrowInvalid, OSError, KeyError, ValueError, zlib.error) as err:
        raise VerdictError(f"verdict file {where} is not readable ({type(err).__name__}: {err}); it is written by "
                           "rft run beside the run's results") from err
    points: dict[int, dict[str, np.ndarray]] = {}
    metric_subsets: dict[str, str] = {}
    for step, metric, subset, n, bits in zip(*(table.column(c).to_pylist() for c in _SCHEMA.names)):
        ok = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n).astype(bool)
        points.setdefault(int(step), {})[metric] = ok
        metric_subsets[metric] = subset
    return RunVerdicts(points, metric_subsets, subsets)


def write_verdicts(filesystem, root_path: str, run_id: str, verdicts: RunVerdicts) -> None:
    """Replace the run's sidecar (atomically locally, one object write remotely)."""
    write_bytes(filesystem, verdicts_path(root_path, run_id), encode(verdicts))


def read_verdicts(filesystem, root_path: str, run_id: str) -> RunVerdicts | None:
    """The run's verdicts, None where it has no sidecar (runs written before verdicts were kept)."""
    path = verdicts_path(root_path, run_id)
    data = read_bytes(filesystem, path)
    return None if data is None else decode(data, path)
