"""What `rft attack` measured, stored beside the runs and never inside them: `<store>/attacks/<run_id>.parquet`.

One row per attacked evaluation point (run_id, step) and, per attack and L-inf radius,

    <slug>_adv_acc/<eps label>   robust accuracy on the run's own seeded PGD subset under the run's PGD
                                 verdict rule (any_iterate: clean-correct and correct under the attack;
                                 final_iterate: the attack's image classified correctly), e.g. aa_adv_acc/1/255
    <slug>_images                images that accuracy is measured on (the PGD subset: pgd_images)
    <slug>_seconds/<eps label>   wall seconds the attack took at that radius on that point

with the slugs of ATTACK_SLUGS (`pgd` re-run by `rft attack` is `pgd_rerun`, so it never shadows the
training-time `pgd_adv_acc` columns). A second `rft attack` merges into the file: a (run, step, column) it
measures again is replaced, every other value is kept; the read, merge and replace happen under the file's own
lock (`rft_ray.results.lease`), so concurrent writers lose no row, and the file is replaced atomically (as run
files are).
`ResultStore.read()` left-joins these columns onto the runs' rows by (run_id, step), so analysis reads them as
ordinary columns. The folder is not a run: `ResultStore.run_ids` lists the files of the root only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rft_ray.config.metrics import RadiusError, eps_label, parse_radius
from rft_ray.results.files import atomic_path, write_failed
from rft_ray.results.lease import Lease

ATTACKS_DIR = "attacks"
# `rft attack --attack NAME` -> the column slug. Order: how tables and messages list them.
ATTACK_SLUGS = {"autoattack": "aa", "apgd-ce": "apgd_ce", "apgd-t": "apgd_t", "fab": "fab", "square": "square",
                "pgd": "pgd_rerun"}
KEYS = ("run_id", "step")
MERGE_WAIT_S = 600.0  # how long a merge waits for another writer's merge of the same file


class AttackError(ValueError):
    """Bad input to `rft attack` (an attack or radius it does not know, nothing to attack), or an attack results
    file that cannot be read; the message names what and what is allowed."""


def attack_slug(name: str) -> str:
    try:
        return ATTACK_SLUGS[name]
    except KeyError:
        raise AttackError(f"unknown attack {name!r}: use one of {', '.join(ATTACK_SLUGS)}") from None


def parse_attacks(texts: Iterable[str]) -> list[str]:
    """'autoattack,pgd' and repeated values -> attack names in the order given, each once."""
    names = [part.strip().lower() for text in texts for part in str(text).split(",") if part.strip()]
    for name in names:
        attack_slug(name)
    return list(dict.fromkeys(names))


def parse_radii(texts: Iterable[str]) -> list[float]:
    """'1/255,2/255' and repeated values -> radii in (0, 1] pixel units, in the order given, each once."""
    radii: list[float] = []
    for part in (p.strip() for text in texts for p in str(text).split(",")):
        if not part:
            continue
        try:
            radius = parse_radius(part)
        except RadiusError as err:
            raise AttackError(str(err)) from None
        if not any(eps_label(radius) == eps_label(seen) for seen in radii):
            radii.append(radius)
    return radii


def accuracy_column(attack: str, radius: float) -> str:
    return f"{attack_slug(attack)}_adv_acc/{eps_label(radius)}"


def images_column(attack: str) -> str:
    return f"{attack_slug(attack)}_images"


def seconds_column(attack: str, radius: float) -> str:
    return f"{attack_slug(attack)}_seconds/{eps_label(radius)}"


def sidecar_path(store_path: str, run_id: str) -> str:
    """The run's attack results file, on the store's filesystem (`store_path`: `ResultStore.path`)."""
    return f"{store_path}/{ATTACKS_DIR}/{run_id}.parquet"


def _column_type(name: str) -> pa.DataType:
    if name == "run_id":
        return pa.string()
    return pa.int64() if name == "step" or name.endswith("_images") else pa.float64()


def read_sidecar(filesystem: pafs.FileSystem, path: str) -> pa.Table | None:
    """One attack results file (None when there is none)."""
    try:
        with filesystem.open_input_file(path) as handle:
            table = pq.read_table(handle)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowInvalid) as err:
        raise AttackError(f"attack results file {path} is not readable Parquet: {err}") from err
    missing = [key for key in KEYS if key not in table.column_names]
    if missing:
        raise AttackError(f"attack results file {path} has no {' or '.join(missing)} column: not written by rft attack")
    return table


def merge_rows(existing: pa.Table | None, rows: list[dict]) -> pa.Table:
    """`existing` with `rows` merged in: a row's values replace the same (run_id, step, column), all else stays."""
    merged: dict[tuple[str, int], dict] = {}
    for row in (existing.to_pylist() if existing is not None else []) + [dict(r) for r in rows]:
        key = (str(row["run_id"]), int(row["step"]))
        merged.setdefault(key, {}).update({k: v for k, v in row.items() if k not in KEYS})
    names = sorted({name for values in merged.values() for name in values})
    ordered = sorted(merged.items())
    columns = {"run_id": pa.array([k[0] for k, _ in ordered], pa.string()),
               "step": pa.array([k[1] for k, _ in ordered], pa.int64())}
    for name in names:
        columns[name] = pa.array([values.get(name) for _, values in ordered], _column_type(name))
    return pa.table(columns)


def record_attack_results(filesystem: pafs.FileSystem, store_path: str, run_id: str, rows: list[dict]) -> str:
    """Merge `rows` (each with run_id, step and attack columns) into the run's attack results file, replaced
    atomically, under the file's lock; returns its path. WriteError (the previous file intact) when it cannot
    be written."""
    if any(str(row["run_id"]) != run_id for row in rows):
        raise AttackError(f"attack results written for run {run_id!r} carry another run id")
    path = sidecar_path(store_path, run_id)
    lock = Lease(filesystem, store_path, f"attacks-{run_id}", "a merge of attack results",
                 f"the attack results of run {run_id}").acquire(wait=MERGE_WAIT_S)
    try:
        table = merge_rows(read_sidecar(filesystem, path), rows)
        if not isinstance(filesystem, pafs.LocalFileSystem):
            try:
                filesystem.create_dir(f"{store_path}/{ATTACKS_DIR}", recursive=True)
                pq.write_table(table, path, filesystem=filesystem)  # object stores replace an object atomically
            except OSError as err:
                raise write_failed(err, path) from err
            return path
        with atomic_path(path) as temporary:
            filesystem.create_dir(f"{store_path}/{ATTACKS_DIR}", recursive=True)
            pq.write_table(table, str(temporary))
    finally:
        lock.release()
    return path


def read_attack_results(filesystem: pafs.FileSystem, store_path: str, run_ids: Iterable[str]) -> pa.Table | None:
    """The attack results of `run_ids` as one table (None when none has any)."""
    wanted = set(run_ids)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(f"{store_path}/{ATTACKS_DIR}", allow_not_found=True))
    except OSError as err:
        raise AttackError(f"cannot list the attack results in {store_path}/{ATTACKS_DIR}: {err}") from err
    tables = []
    for info in sorted(infos, key=lambda i: i.path):
        name = Path(info.path).name
        if info.type == pafs.FileType.File and name.endswith(".parquet") and name[: -len(".parquet")] in wanted:
            table = read_sidecar(filesystem, info.path)
            if table is not None and table.num_rows:
                tables.append(table)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def join_attack_results(rows: pa.Table, attacks: pa.Table) -> pa.Table:
    """`rows` (result rows) with every attack column of `attacks` added, matched by (run_id, step); null where
    a row was not attacked. Rows keep their order; attack rows matching no result row are left out."""
    clash = sorted(set(attacks.column_names) & set(rows.column_names) - set(KEYS))
    if clash:
        raise AttackError(f"attack results columns {clash} are also columns of the runs' own rows")
    position = {(str(r), int(s)): i for i, (r, s) in enumerate(zip(attacks.column("run_id").to_pylist(),
                                                                   attacks.column("step").to_pylist()))}
    index = pa.array([position.get((str(r), int(s))) for r, s in zip(rows.column("run_id").to_pylist(),
                                                                     rows.column("step").to_pylist())], pa.int64())
    for name in attacks.column_names:
        if name not in KEYS:
            rows = rows.append_column(name, attacks.column(name).take(index))
    return rows
