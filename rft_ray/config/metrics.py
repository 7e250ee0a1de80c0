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
