"""The one record an evaluation point produces; Parquet, JSON, Ray and MLflow all read this."""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

from rft_ray.config.metrics import (  # noqa: F401
    OOD_IMAGES_PREFIX,
    OOD_PREFIX,
    PGD_PREFIX,
    eps_label,
    parse_eps_label,
    same_radius,
)

# Keys the paper's public code wrote per evaluation point; `rft run --json` keeps them so old scripts work.
PAPER_JSON_KEYS = ("step", "epoch", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy")


@dataclass(frozen=True)
class EvalRecord:
    run_id: str
    strategy: str
    dataset: str
    model: str
    lr: float
    weight_decay: float
    seed: int
    step: int
    total_steps: int
    epoch: float  # examples seen / train-set size
    examples_seen: int
    train_loss: float  # mean training loss since the previous evaluation point (NaN at step 0)
    train_clean_acc: float
    test_clean_acc: float
    pgd_adv_acc: float
    pgd_eps: float
    test_ood_accuracy: float  # pooled over every OOD example of every domain
    trainable_params: int
    total_params: int
    wall_seconds: float  # since the run (or its resumed part's original start) began
    eval_seconds: float  # spent on this evaluation point
    # How many images each metric was measured on (None in results written before they were recorded).
    train_images: int | None = None  # train_clean_acc
    test_images: int | None = None  # test_clean_acc
    pgd_images: int | None = None  # pgd_adv_acc and every pgd_adv_acc/<radius>
    # The same measurements on the held-out validation split (`dataset.val_fraction`, sized by
    # `evaluation.validation`): what selections read, so that test numbers are only reported. None where
    # validation was not measured (off, no validation split, no OOD validation) and in files written before.
    val_clean_acc: float | None = None
    val_pgd_adv_acc: float | None = None  # at evaluation.pgd.eps
    val_ood_accuracy: float | None = None  # pooled like test_ood_accuracy, over the OOD domains' validation parts
    val_images: int | None = None  # val_clean_acc
    val_pgd_images: int | None = None  # val_pgd_adv_acc
    val_ood_images: int | None = None  # val_ood_accuracy, every domain together
    # When the point was measured (Unix seconds): MLflow's time of its metrics, also when back-filled later.
    measured_at: float | None = None
    # Rows of WiSE-FT interpolations only (`rft interpolate`; kept apart in the store's `interpolated` sub-store,
    # see analysis.wise): the alpha between the run's step-0 model (0) and its checkpoint at `step` (1), and
    # that run's id. None in every run's own rows and in files written before they existed.
    wise_alpha: float | None = None
    source_run_id: str | None = None
    ood_acc: dict[str, float] = field(default_factory=dict)
    pgd_extra: dict[str, float] = field(default_factory=dict)  # radius label (eps_label) -> robust accuracy
    ood_images: dict[str, int] = field(default_factory=dict)  # domain -> images behind ood_acc/<domain>

    def to_row(self) -> dict[str, Any]:
        """Flat columns: one `ood_acc/<domain>` (and `ood_images/<domain>`) column per OOD domain."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _DICT_FIELDS}
        for domain, acc in sorted(self.ood_acc.items()):
            row[OOD_PREFIX + domain] = acc
        for radius, acc in sorted(self.pgd_extra.items(), key=lambda item: parse_eps_label(item[0])):
            row[PGD_PREFIX + radius] = acc
        for domain, count in sorted(self.ood_images.items()):
            row[OOD_IMAGES_PREFIX + domain] = count
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "EvalRecord":
        names = {f.name for f in fields(cls)} - _DICT_FIELDS

        def prefixed(prefix: str) -> dict[str, Any]:
            return {key[len(prefix):]: value for key, value in row.items()
                    if key.startswith(prefix) and value is not None and not _is_nan(value)}

        return cls(**{name: row[name] for name in names if name in row or name in REQUIRED_COLUMNS},
                   ood_acc=prefixed(OOD_PREFIX), pgd_extra=prefixed(PGD_PREFIX),
                   ood_images=prefixed(OOD_IMAGES_PREFIX))

    def paper_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PAPER_JSON_KEYS}

    def metrics(self) -> dict[str, float]:
        """The numeric per-step metrics (what Tune and MLflow log); the validation metrics where measured."""
        keys = ("train_loss", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy",
                "epoch", "examples_seen", "wall_seconds", "eval_seconds")
        out = {key: float(getattr(self, key)) for key in keys}
        out.update({key: float(getattr(self, key)) for key in VALIDATION_METRICS if getattr(self, key) is not None})
        out.update({OOD_PREFIX + domain: acc for domain, acc in self.ood_acc.items()})
        out.update({PGD_PREFIX + radius: acc for radius, acc in self.pgd_extra.items()})
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The validation metrics and the counts of images behind them (None when not measured).
VALIDATION_METRICS = ("val_clean_acc", "val_pgd_adv_acc", "val_ood_accuracy")
VALIDATION_COUNTS = {"val_clean_acc": "val_images", "val_pgd_adv_acc": "val_pgd_images",
                     "val_ood_accuracy": "val_ood_images"}
_DICT_FIELDS = {"ood_acc", "pgd_extra", "ood_images"}
_ARROW_TYPES = {str: ("string", pa.string()), int: ("integer", pa.int64()), float: ("number", pa.float64())}


def _scalar_fields() -> dict[str, tuple[type, bool]]:
    """name -> (type, required): the optional ones (`int | None`) may be missing from older result files."""
    hints = typing.get_type_hints(EvalRecord)
    out = {}
    for f in fields(EvalRecord):
        if f.name not in _DICT_FIELDS:
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            out[f.name] = (args[0], False) if args else (hints[f.name], True)
    return out


# Every result file's columns and the type family of each ("string", "integer", "number"), from EvalRecord.
REQUIRED_COLUMNS: dict[str, str] = {name: _ARROW_TYPES[tp][0] for name, (tp, required) in _scalar_fields().items()
                                    if required}


def arrow_schema(columns: typing.Iterable[str]) -> pa.Schema:
    """The Arrow schema of result rows with these columns: EvalRecord's own types, int64 for the
    `ood_images/<domain>` counts, float64 for the `ood_acc/<domain>` and `pgd_adv_acc/<radius>` columns."""
    types = {name: _ARROW_TYPES[tp][1] for name, (tp, _) in _scalar_fields().items()}

    def arrow_type(name: str) -> pa.DataType:
        return types.get(name, pa.int64() if name.startswith(OOD_IMAGES_PREFIX) else pa.float64())

    return pa.schema([(name, arrow_type(name)) for name in columns])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
