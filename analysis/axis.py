"""The frontier's robustness axis: PGD accuracy (the default), the pooled OOD accuracy, or one OOD domain's.

Every frontier, AUC, RQ1 curve, knee and `rft best` point trades clean accuracy against ``pgd_adv_acc``. To trade
it against OOD accuracy instead (`rft analyze --robustness ood`, `rft best --robustness ood:<domain>`),
`select_axis` puts the chosen column in ``pgd_adv_acc``'s place, as `analysis.radius.select_eps` does for a PGD
radius, and the report and `rft best` name the axis (`axis_label`):

- ``pgd``: ``pgd_adv_acc`` at one radius (`select_eps`);
- ``ood``: ``test_ood_accuracy``, the pooled OOD accuracy over the run's OOD domains (corruptions, natural
  domains, own OOD sets; pooled as the run's ``evaluation.ood_pooling`` says);
- ``ood:<domain>``: ``ood_acc/<domain>``, one domain's accuracy.

Rows without the chosen value (a dataset without OOD domains, runs without that domain) are left out, counted
in a warning; no row with it is an error naming the domains the results hold.
"""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from analysis.cleaning import DroppedRowsWarning, TableError, float_column
from analysis.radius import select_eps, without_extra_radii
from rft_ray.results.record import OOD_IMAGES_PREFIX, OOD_PREFIX

AXES = ("pgd", "ood", "ood:<domain>")


def check_axis(axis: str) -> str:
    """`axis` if it names an axis (ValueError saying which do otherwise)."""
    if axis in ("pgd", "ood") or (axis.startswith("ood:") and len(axis) > 4):
        return axis
    raise ValueError(f"robustness axis {axis!r}: choose pgd (PGD accuracy), ood (the pooled OOD accuracy) or "
                     "ood:<domain> (one OOD domain's accuracy, e.g. ood:contrast)")


def axis_column(axis: str) -> str:
    check_axis(axis)
    return {"pgd": "pgd_adv_acc", "ood": "test_ood_accuracy"}.get(axis) or OOD_PREFIX + axis[len("ood:"):]


def axis_label(axis: str) -> str:
    """The axis in words, for reports and `rft best`."""
    check_axis(axis)
    if axis == "pgd":
        return "PGD accuracy"
    return "OOD accuracy (pooled over the OOD domains)" if axis == "ood" else f"OOD accuracy on {axis[4:]}"


def ood_domains(table: pa.Table) -> list[str]:
    return sorted(c[len(OOD_PREFIX):] for c in table.column_names if c.startswith(OOD_PREFIX))


def _axis_counts(table: pa.Table, axis: str) -> np.ndarray:
    """Images behind each row's value on an OOD axis (NaN where not recorded): the domain's count, or for the
    pooled accuracy the sum over the domains measured."""
    if axis != "ood":
        column = OOD_IMAGES_PREFIX + axis[len("ood:"):]
        return float_column(table.column(column)) if column in table.column_names else np.full(table.num_rows, np.nan)
    columns = [float_column(table.column(c)) for c in table.column_names if c.startswith(OOD_IMAGES_PREFIX)]
    if not columns:
        return np.full(table.num_rows, np.nan)
    stacked = np.vstack(columns)
    total = np.nansum(stacked, axis=0)
    return np.where(np.isnan(stacked).all(axis=0), np.nan, total)


def select_axis(table: pa.Table, axis: str = "pgd", eps: float | None = None) -> pa.Table:
    """The table with the chosen robustness in ``pgd_adv_acc`` (module docstring); ``pgd_eps`` emptied for an
    OOD axis, which has no radius."""
    if check_axis(axis) == "pgd":
        return select_eps(table, eps)
    if eps is not None:
        raise TableError(f"--eps chooses a PGD radius; the robustness axis {axis!r} has none")
    column = axis_column(axis)
    domains = ood_domains(table)
    if column not in table.column_names:
        raise TableError(f"the results have no {column} column to use as the robustness axis ({axis}); their OOD "
                         f"domains: {', '.join(domains) or 'none'}")
    values = float_column(table.column(column))
    measured = ~np.isnan(values)
    if not measured.any():
        raise TableError(f"no evaluation point has {column} (robustness axis {axis}); the results' OOD domains: "
                         f"{', '.join(domains) or 'none'}")
    if not measured.all():
        warnings.warn(f"robustness axis {axis}: {int((~measured).sum())} of {len(values)} evaluation points have no "
                      f"{column} and are left out", DroppedRowsWarning, stacklevel=2)
    out = without_extra_radii(table).filter(pa.array(measured))
    out = out.set_column(out.column_names.index("pgd_adv_acc"), "pgd_adv_acc", pa.array(values[measured]))
    counts = _axis_counts(table, axis)[measured]  # the images behind the axis: its intervals (analysis.uncertainty)
    count_array = pa.array(np.where(np.isnan(counts), None, counts).tolist(), pa.float64())
    if "pgd_images" in out.column_names:
        out = out.set_column(out.column_names.index("pgd_images"), "pgd_images", count_array)
    else:
        out = out.append_column("pgd_images", count_array)
    if "pgd_eps" in out.column_names:
        out = out.set_column(out.column_names.index("pgd_eps"), "pgd_eps", pa.nulls(out.num_rows, pa.float64()))
    return out
