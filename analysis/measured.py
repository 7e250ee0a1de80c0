"""Robust accuracies at every radius a result table holds, by source: training-time PGD and the stronger
attacks `rft attack` stores.

Columns (the record's and `rft attack`'s contract):

* training-time PGD: ``pgd_adv_acc`` at the row's ``pgd_eps``, and ``pgd_adv_acc/<eps label>`` at the
  radii of ``evaluation.pgd.extra_eps``; both measured on the run's seeded, class-stratified PGD subset
  (``pgd_images`` images);
* a stronger attack: ``<slug>_adv_acc/<eps label>`` (slug: aa = AutoAttack, apgd_ce, apgd_t, fab, square,
  pgd_rerun = PGD run again by ``rft attack``) with ``<slug>_images`` images: ``rft attack`` attacks the
  run's own seeded PGD subset, so an attack and PGD at one point and radius are measured on the same images.
  Rows (evaluation points) the attack did not reach hold nulls there.

Values outside [0, 1], NaN, null and infinite are "not measured" (`MeasuredTable.values` counts the
non-null ones it ignores). Radii are compared with `same_radius`, the platform's one tolerance.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import REQUIRED_COLUMNS, clean_table, float_column
from analysis.frame import Frame
from analysis.radius import distinct_radii, extra_columns
from rft_ray.results.record import PGD_PREFIX, eps_label, parse_eps_label, same_radius

# Display names of the attacks `rft attack` writes, in the order tables list them; other slugs follow, sorted.
ATTACK_NAMES: dict[str, str] = {
    "aa": "AutoAttack", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T", "fab": "FAB", "square": "Square",
    "pgd_rerun": "PGD (re-run)",
}
PGD_SOURCE = "pgd"  # training-time PGD, as a curve source
_ATTACK_COLUMN = re.compile(r"^(?P<slug>[a-z][a-z0-9_]*)_adv_acc/(?P<label>.+)$")


def attack_name(slug: str) -> str:
    return "PGD (training-time)" if slug == PGD_SOURCE else ATTACK_NAMES.get(slug, slug)


def attack_sort_key(slug: str) -> tuple[int, str]:
    order = list(ATTACK_NAMES)
    return (order.index(slug), "") if slug in order else (len(order), slug)


@dataclass(frozen=True)
class AttackColumn:
    slug: str
    eps: float
    column: str

    @property
    def images_column(self) -> str:
        return f"{self.slug}_images"

    @property
    def label(self) -> str:
        return eps_label(self.eps)


def attack_columns(column_names: Sequence[str]) -> list[AttackColumn]:
    """The `<slug>_adv_acc/<eps label>` columns (training-time `pgd_adv_acc/...` excluded), by attack then eps."""
    out = []
    for name in column_names:
        match = _ATTACK_COLUMN.match(name)
        if not match or name.startswith(PGD_PREFIX):
            continue
        try:
            radius = parse_eps_label(match["label"])
        except (ValueError, ZeroDivisionError):
            continue  # not a radius label: not an attack column
        out.append(AttackColumn(match["slug"], round(radius, 9), name))
    return sorted(out, key=lambda c: (attack_sort_key(c.slug), c.eps))


@dataclass
class MeasuredTable:
    """A cleaned result table with every radius column, as numpy arrays; `frame` holds the usual columns."""
    table: pa.Table
    frame: Frame
    pgd_eps: np.ndarray
    ignored: dict[str, int] = field(default_factory=dict)  # column -> non-null values ignored (outside [0, 1])

    @classmethod
    def of(cls, table: pa.Table, *, strict: bool = False) -> "MeasuredTable":
        """Clean (`clean_table`, silently: `analyze` reports its own cleaning) and index the table."""
        clean, _ = clean_table(table, strict=strict, required=REQUIRED_COLUMNS, warn=False)
        eps = float_column(clean.column("pgd_eps")) if "pgd_eps" in clean.column_names else np.full(clean.num_rows, np.nan)
        return cls(table=clean, frame=Frame.of(clean), pgd_eps=eps)

    def values(self, column: str) -> np.ndarray:
        """An accuracy column as floats, NaN where not measured (absent column: all NaN)."""
        if column not in self.table.column_names:
            return np.full(self.table.num_rows, np.nan)
        values = float_column(self.table.column(column))
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(values) & ((values < 0) | (values > 1)) | np.isinf(values)
        if bad.any():
            self.ignored[column] = int(bad.sum())
        return np.where(bad, np.nan, values)

    def counts(self, column: str) -> np.ndarray:
        """An image-count column as floats, NaN where absent."""
        if column not in self.table.column_names:
            return np.full(self.table.num_rows, np.nan)
        return float_column(self.table.column(column))

    def pgd_radii(self) -> list[float]:
        """Every training-time PGD radius: the pgd_eps values and the pgd_adv_acc/<radius> columns."""
        return distinct_radii([float(v) for v in self.pgd_eps if np.isfinite(v)] + list(extra_columns(self.table)))

    def _pgd_extra(self) -> list[tuple[float, str]]:
        return list(extra_columns(self.table).items())

    def pgd_at(self, eps: float) -> np.ndarray:
        """Training-time PGD accuracy at `eps` per row: pgd_adv_acc where the row's pgd_eps is that radius,
        else its pgd_adv_acc/<radius> column; NaN where the row did not measure that radius."""
        out = np.full(self.table.num_rows, np.nan)
        primary = np.array([np.isfinite(v) and same_radius(v, eps) for v in self.pgd_eps], dtype=bool)
        out[primary] = self.frame.rob[primary]
        for radius, name in self._pgd_extra():
            if same_radius(radius, eps):
                extra = self.values(name)
                fill = np.isnan(out) & ~np.isnan(extra)
                out[fill] = extra[fill]
        return out

    def point_rows(self, rows: np.ndarray, step: int | None) -> dict[str, int]:
        """run_id -> the row of each run's last evaluated step (<= `step` when given) among `rows`."""
        out = {}
        for run_id, idx in self.frame.runs(rows):
            if step is not None:
                idx = idx[self.frame.step[idx] <= step]
            if len(idx):
                out[run_id] = int(idx[-1])
        return out
