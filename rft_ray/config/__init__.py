"""The bottom floor: the strict spec machinery, the run and experiment specs, the registry type and the
names of measured quantities. It imports nothing of the project above it."""
from rft_ray.config.fields import (
    SpecError,
    apply_overrides,
    build,
    build_options,
    check,
    described,
    load_spec,
    load_yaml,
    parse_sets,
    plain_data,
    to_plain,
)
from rft_ray.config.metrics import (
    OOD_PREFIX,
    PGD_PREFIX,
    eps_label,
    parse_eps_label,
    same_radius,
)
from rft_ray.config.registry import Registry
from rft_ray.config.run import (
    DatasetSpec,
    EvaluationSpec,
    ModelSpec,
    OutputSpec,
    PGDSpec,
    RunSpec,
    ScheduleSegment,
    StrategySpec,
    TrainingSpec,
    ValidationSpec,
)

__all__ = [
    "SpecError", "apply_overrides", "build", "build_options", "check", "described", "load_spec", "load_yaml",
    "parse_sets", "plain_data", "to_plain", "OOD_PREFIX", "PGD_PREFIX", "eps_label", "parse_eps_label",
    "same_radius", "Registry", "DatasetSpec", "EvaluationSpec", "ModelSpec", "OutputSpec", "PGDSpec", "RunSpec",
    "ScheduleSegment", "StrategySpec", "TrainingSpec", "ValidationSpec",
]
