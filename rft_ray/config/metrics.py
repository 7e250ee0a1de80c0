"""Names of measured quantities that specs, records and reports share, and PGD radius identity.

Two radii are the same radius when `same_radius` says so, everywhere: in spec validation, in a sweep
collecting its radii, and in the analysis selecting rows (one tolerance, not three).
"""
from __future__ import annotations

import math

OOD_PREFIX = "ood_acc/"  # + domain: accuracy on one OOD domain
PGD_PREFIX = "pgd_adv_acc/"  # + radius label: robust accuracy at evaluation.pgd.extra_eps radii
OOD_IMAGES_PREFIX = "ood_images/"  # + domain: how many images of that domain ood_acc/<domain> was measured on
# Relative and absolute slack of radius identity: far below any radius people use (0.1/255 = 3.9e-4),
# far above the rounding of a radius written as a fraction, a float or a label.
RADIUS_REL_TOL, RADIUS_ABS_TOL = 1e-6, 1e-9


def same_radius(a: float, b: float) -> bool:
    """Whether two L-inf radii (pixel units) are one radius."""
    return math.isclose(float(a), float(b), rel_tol=RADIUS_REL_TOL, abs_tol=RADIUS_ABS_TOL)


def eps_label(radius: float) -> str:
    """A PGD radius as people write it: 1/255 -> '1/255', 0.5/255 -> '0.5/255'."""
    return f"{radius * 255:g}/255"


class RadiusError(ValueError):
    """A command-line radius (`--eps`) that is not a number or fraction in (0, 1]."""


def parse_radius(text: str, option: str = "--eps") -> float:
    """A radius given on the command line, '2/255' or '0.0078', in (0, 1] pixel units; RadiusError naming
    `option` otherwise. `rft analyze`, `rft best` and `rft attack` read their --eps through this."""
    try:
        value = parse_eps_label(text)
    except (ValueError, ZeroDivisionError):
        raise RadiusError(f"{option} takes a number or a fraction such as 2/255, got {text!r}") from None
    if not 0 < value <= 1:  # NaN fails this too
        raise RadiusError(f"{option} must be in (0, 1] (pixel units: 1/255 = {1 / 255:.5f}), got {text!r}")
    return value


def parse_eps_label(text: str) -> float:
    """'2/255' or '0.0078' -> the radius as a float (ValueError when it is neither)."""
    if "/" in text:
        top, bottom = text.split("/", 1)
        return float(top) / float(bottom)
    return float(text)


# ---------------------------------------------------------------------------------------------------
# Which split a selection reads (search.select_on, `rft best --select-on`): the one home of the mapping from a
# quantity, named by its test column, to the column a selection under each split reads.

SELECT_ON = ("validation", "test")
# The validation column that stands for each test column (measured on the seeded, class-stratified validation
# subset carved out of the training data, evaluation.validation). Selection reads these; tables report both.
VALIDATION_COLUMNS = {"test_clean_acc": "val_clean_acc", "pgd_adv_acc": "val_pgd_adv_acc",
                      "test_ood_accuracy": "val_ood_accuracy"}
TRAINING_METRICS = ("train_clean_acc", "train_loss")  # measured on training data: the same under either split
PARETO_AUC = "pareto_auc"  # the hypervolume AUC of a trial's own (clean, PGD) points
VAL_PARETO_AUC = "val_pareto_auc"  # the same over its validation points


class SelectionError(ValueError):
    """A selection that cannot read the split it was asked to: the message says what is missing and what to do."""


def check_select_on(select_on: str, option: str = "search.select_on") -> str:
    if select_on not in SELECT_ON:
        raise SelectionError(f"{option} must be one of {', '.join(SELECT_ON)}, got {select_on!r}")
    return select_on


def selection_column(metric: str, select_on: str) -> str:
    """The column a selection under `select_on` reads for `metric` (a test column, a training metric, an
    `ood_acc/<domain>` or `pgd_adv_acc/<radius>` column, or pareto_auc). SelectionError where validation has no
    counterpart: per-domain OOD and extra PGD radii are measured on test only."""
    check_select_on(select_on)
    if select_on == "test" or metric in TRAINING_METRICS:
        return metric
    if metric == PARETO_AUC:
        return VAL_PARETO_AUC
    if metric in VALIDATION_COLUMNS:
        return VALIDATION_COLUMNS[metric]
    if metric.startswith(OOD_PREFIX):
        raise SelectionError(f"{metric} is measured on test images only (validation measures the pooled OOD accuracy, "
                             "val_ood_accuracy): select on test_ood_accuracy, or on test with select_on: test "
                             "(optimistic)")
    if metric.startswith(PGD_PREFIX):
        raise SelectionError(f"{metric} (an extra PGD radius) is measured on test images only: select at the run's "
                             "own radius (pgd_adv_acc), or on test with select_on: test (optimistic)")
    raise SelectionError(f"no validation counterpart of {metric!r}; validation measures "
                         f"{', '.join(VALIDATION_COLUMNS.values())}")


def reported_column(metric: str) -> str | None:
    """The test column reported beside a selection on `metric` (None for training metrics: they have none)."""
    return None if metric in TRAINING_METRICS else metric


def selection_label(select_on: str) -> str:
    """What every table that shows a selection says about it."""
    check_select_on(select_on)
    return ("selected on validation; test reported" if select_on == "validation"
            else "selected on test (optimistic: the test images chose the point; no held-out number)")


def optimistic_warning(where: str) -> str:
    """The one-line warning of a selection on test."""
    return (f"{where} is test: points are chosen on the test images, so their test numbers are optimistic "
            "(fine for reproducing the paper's test-only curves; select on validation for an honest estimate)")


def missing_validation(what: str, columns: tuple[str, ...] | list[str], option: str) -> SelectionError:
    """The error of a selection on validation whose rows carry no validation metrics: never a silent fallback."""
    return SelectionError(
        f"{what}: no validation metrics ({', '.join(columns)} missing or empty): its rows were written before "
        "validation was measured, or with evaluation.validation off. Selection reads validation by default; run "
        f"again with validation on, or choose on test with {option} test (optimistic: the test images then "
        "choose the point)")
