"""Per-image verdicts: which images each evaluation point got right, kept beside the run's records so that
intervals and paired comparisons can be computed from the images themselves (`analysis.bootstrap`).

One sidecar file per run, `<store>/verdicts/<run_id>.parquet`, on any filesystem the store supports; `rft attack`
keeps its own per run in `<store>/attacks/verdicts/` (metrics: its accuracy columns, e.g. aa_adv_acc/1/255, on
test/pgd) and `rft interpolate` its own per interpolated file in `<store>/interpolated/verdicts/` (keyed by step and
alpha). One row per (step[, alpha], metric):

    step     the evaluation point
    alpha    the WiSE-FT alpha of an interpolated point (`rft interpolate`); null for every other point
    metric   the record's column the verdicts are behind: test_clean_acc, pgd_adv_acc, pgd_adv_acc/<radius>,
             ood_acc/<domain>, val_clean_acc, val_pgd_adv_acc, val_ood_acc/<domain>, an attack's column
    subset   the images, by name: test, test/pgd, ood/<domain>, val, val/pgd, val/ood/<domain>
    n        how many images (bits)
    coding   how `bits` holds the point against the previous point of the same metric (the row before it, in
             the file's order, with that metric): plain bits, the XOR of the two bitmaps, or the positions of the
             images whose verdict changed (`rft_ray.results.verdict_codec`). Few images change their verdict
             between evaluation points, so a point costs a fraction of its bitmap (measured:
             docs/guides/analysis.md)
    bits     numpy.packbits of the booleans in the subset's image order (1 = correct / robust), or what `coding`
             says

Decoding undoes the chain transparently; the file is zstd-compressed. Files written by 0.2.0 (no alpha or coding
column: every row plain) are read as before.

Image identity: per subset its image indices into the dataset's split and a fingerprint
(`rft_ray.results.verdict_subsets`). Every run of a dataset with the same `split_seed` and subset sizes draws the
same images, so the fingerprints agree and two runs' verdicts pair image by image; where they differ, pairing is
refused (`analysis.bootstrap`). The identities are kept once per store (`<store>/verdicts/subsets/
<fingerprint>.json`, written before the first sidecar naming them); the file's schema metadata
(`rft.verdict_subsets`) names each subset's fingerprint and n. Files written before held each identity (its
indices too) in that metadata, and still read.

Written before the run's own file at every point (`rft_ray.training.runner.StoreObserver`), replaced whole and
atomically (a temporary renamed locally, one object write on object stores): every row a reader sees in the run's
file has its verdicts, and a sidecar never holds a step the run's file has dropped for longer than one point.
The folder is not a run: `ResultStore.run_ids` lists the root's files only.
"""
from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rft_ray.results.files import read_bytes, write_bytes
from rft_ray.results.verdict_codec import PLAIN, coded, uncoded
from rft_ray.results.verdict_subsets import (  # the subsets' identity; Subset and VerdictError are used from here
    SUBSETS_DIR,
    Subset,
    SubsetFiles,
    VerdictError,
    reference,
)

VERDICTS_DIR = "verdicts"
ATTACK_VERDICTS_DIR = "attacks/verdicts"  # `rft attack`'s, one file per attacked run
PGD_SUBSET = "test/pgd"  # the subset PGD and `rft attack`'s attacks are measured on
SUBSETS_KEY = b"rft.verdict_subsets"
_SCHEMA = pa.schema([("step", pa.int64()), ("alpha", pa.float64()), ("metric", pa.string()), ("subset", pa.string()),
                     ("n", pa.int32()), ("coding", pa.int8()), ("bits", pa.binary())])
_OLD_COLUMNS = ("step", "metric", "subset", "n", "bits")  # 0.2.0's files: every row plain
ZSTD_LEVEL = 9


@dataclass
class RunVerdicts:
    """One run's verdicts: step -> metric -> booleans, the subset of each metric, and each subset's identity."""

    points: dict  # point -> metric -> booleans; a point is its step, or (step, alpha) in `rft interpolate`'s files
    metric_subsets: dict[str, str]
    subsets: dict[str, Subset]

    def subset_of(self, metric: str) -> Subset:
        return self.subsets[self.metric_subsets[metric]]

    def merge_point(self, key, verdicts: dict[str, np.ndarray], subset_name: str, subset: Subset) -> None:
        """Add (or replace) metrics of one point, all measured on one subset; VerdictError where that subset
        differs from the images the file's other points were measured on (they would not pair)."""
        known = self.subsets.get(subset_name)
        if known is not None and known.fingerprint != subset.fingerprint:
            raise VerdictError(f"the {subset_name} images of this point differ from those of the verdicts kept "
                               f"before (fingerprint {subset.fingerprint[:12]} vs {known.fingerprint[:12]})")
        self.subsets[subset_name] = subset
        self.points.setdefault(key, {}).update({m: np.asarray(v, dtype=bool) for m, v in verdicts.items()})
        self.metric_subsets.update({m: subset_name for m in verdicts})


def verdicts_path(root_path: str, run_id: str, folder: str = VERDICTS_DIR) -> str:
    return f"{root_path}/{folder}/{run_id}.parquet"


def _split(key) -> tuple[int, float | None]:
    return (int(key[0]), float(key[1])) if isinstance(key, tuple) else (int(key), None)


def _order(key) -> tuple[int, float]:
    step, alpha = _split(key)
    return step, -1.0 if alpha is None else alpha


def encode(verdicts: RunVerdicts, chain: bool = True) -> bytes:
    """The sidecar file's bytes (Parquet, zstd; module docstring); `chain` False writes every point plain (what
    the storage measurement compares against)."""
    rows = {name: [] for name in _SCHEMA.names}
    previous: dict[str, np.ndarray] = {}  # metric -> its last point's verdicts
    for key in sorted(verdicts.points, key=_order):
        step, alpha = _split(key)
        for metric, ok in sorted(verdicts.points[key].items()):
            ok = np.asarray(ok, dtype=bool)
            coding, data = coded(ok, previous.get(metric), chain)
            for name, value in (("step", step), ("alpha", alpha), ("metric", metric),
                                ("subset", verdicts.metric_subsets[metric]), ("n", int(len(ok))),
                                ("coding", coding), ("bits", data)):
                rows[name].append(value)
            previous[metric] = ok
    subsets = {name: reference(subset) for name, subset in sorted(verdicts.subsets.items())}
    buffer = io.BytesIO()
    # No Arrow schema (it repeats the metadata, base64) nor column statistics in the footer: nothing reads them,
    # and they were most of a short run's file
    with pq.ParquetWriter(buffer, _SCHEMA, compression="zstd", compression_level=ZSTD_LEVEL,
                          use_dictionary=["metric", "subset"], store_schema=False, write_statistics=False) as out:
        out.write_table(pa.table(rows, schema=_SCHEMA))
        out.add_key_value_metadata({SUBSETS_KEY: json.dumps(subsets)})
    return buffer.getvalue()


def decode(data: bytes, where: str, identities: SubsetFiles | None = None) -> RunVerdicts:
    """The verdicts of a sidecar's bytes, of this version or an earlier one (module docstring); `identities`:
    the store's subset files, where the sidecar names its subsets by fingerprint (those before it did not)."""
    try:
        table = pq.read_table(io.BytesIO(data))
        named = json.loads((table.schema.metadata or {})[SUBSETS_KEY])
        inline = {name: Subset.from_json(v) for name, v in named.items() if "indices" in v}  # earlier files
        refs = {name: (str(v["fingerprint"]), int(v["n"])) for name, v in named.items() if name not in inline}
        columns = {c: table.column(c).to_pylist() for c in _OLD_COLUMNS}
    except (pa.ArrowInvalid, OSError, KeyError, TypeError, ValueError, zlib.error) as err:
        raise VerdictError(f"verdict file {where} is not readable ({type(err).__name__}: {err}); it is written by "
                           "rft run (rft attack, rft interpolate) beside the results") from err
    if refs and identities is None:
        raise VerdictError(f"verdict file {where} names its subsets by fingerprint: read it through its result "
                           "store, which keeps their identities")
    subsets = {**inline, **{name: identities.get(fingerprint, n, where) for name, (fingerprint, n) in refs.items()}}
    alphas = table.column("alpha").to_pylist() if "alpha" in table.column_names else [None] * table.num_rows
    codings = table.column("coding").to_pylist() if "coding" in table.column_names else [PLAIN] * table.num_rows
    points: dict = {}
    metric_subsets: dict[str, str] = {}
    previous: dict[str, np.ndarray] = {}
    for step, alpha, metric, subset, n, coding, bits in zip(columns["step"], alphas, columns["metric"],
                                                            columns["subset"], columns["n"], codings, columns["bits"]):
        try:
            ok = uncoded(coding, bits, n, previous.get(metric))
        except (ValueError, IndexError) as err:
            raise VerdictError(f"verdict file {where}: step {step} of {metric} cannot be decoded ({err}); the file "
                               "is damaged") from err
        previous[metric] = ok
        points.setdefault(int(step) if alpha is None else (int(step), float(alpha)), {})[metric] = ok
        metric_subsets[metric] = subset
    return RunVerdicts(points, metric_subsets, subsets)


def store_identities(filesystem, root_path: str) -> SubsetFiles:
    """The subset identities of the store at `root_path` (`SUBSETS_DIR`)."""
    return SubsetFiles(filesystem, f"{root_path}/{SUBSETS_DIR}")


def named_subsets(filesystem, path: str) -> dict[str, tuple[str, int]]:
    """The subsets the sidecar at `path` names by fingerprint (name -> fingerprint, n), from its footer alone;
    empty for a file that holds its identities itself (those written before)."""
    try:
        with filesystem.open_input_file(path) as handle:
            named = json.loads((pq.read_schema(handle).metadata or {})[SUBSETS_KEY])
        return {name: (str(v["fingerprint"]), int(v["n"])) for name, v in named.items() if "indices" not in v}
    except (pa.ArrowInvalid, OSError, KeyError, TypeError, ValueError) as err:
        raise VerdictError(f"verdict file {path} is not readable ({type(err).__name__}: {err})") from err


def write_verdicts(filesystem, root_path: str, run_id: str, verdicts: RunVerdicts, folder: str = VERDICTS_DIR,
                   identities: SubsetFiles | None = None) -> None:
    """Replace the run's sidecar in `folder` (atomically locally, one object write remotely), after making sure
    the identities it names are in `identities` (by default the store's)."""
    identities = identities or store_identities(filesystem, root_path)
    for subset in verdicts.subsets.values():  # first: no reader ever sees a sidecar naming a missing identity
        identities.put(subset)
    write_bytes(filesystem, verdicts_path(root_path, run_id, folder), encode(verdicts))


def read_verdicts(filesystem, root_path: str, run_id: str, folder: str = VERDICTS_DIR,
                  identities: SubsetFiles | None = None) -> RunVerdicts | None:
    """The run's verdicts in `folder`, None where it has no sidecar (runs written before verdicts were kept)."""
    path = verdicts_path(root_path, run_id, folder)
    data = read_bytes(filesystem, path)
    return None if data is None else decode(data, path, identities or store_identities(filesystem, root_path))
