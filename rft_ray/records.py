"""The one record an evaluation point produces; Parquet, JSON, Ray and MLflow all read this."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OOD_PREFIX = "ood_acc/"
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
    ood_acc: dict[str, float] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """Flat columns: one `ood_acc/<domain>` column per OOD domain."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ood_acc"}
        for domain, acc in sorted(self.ood_acc.items()):
            row[OOD_PREFIX + domain] = acc
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "EvalRecord":
        names = {f.name for f in fields(cls)} - {"ood_acc"}
        ood = {
            key[len(OOD_PREFIX):]: value
            for key, value in row.items()
            if key.startswith(OOD_PREFIX) and value is not None and not _is_nan(value)
        }
        return cls(**{name: row[name] for name in names}, ood_acc=ood)

    def paper_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PAPER_JSON_KEYS}

    def metrics(self) -> dict[str, float]:
        """The numeric per-step metrics (what Tune and MLflow log)."""
        keys = ("train_loss", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy",
                "epoch", "examples_seen", "wall_seconds", "eval_seconds")
        out = {key: float(getattr(self, key)) for key in keys}
        out.update({OOD_PREFIX + domain: acc for domain, acc in self.ood_acc.items()})
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
