"""The run spec: every setting of one fine-tuning run, validated once, here.

YAML (or a dict) enters through `load_run_spec` / `RunSpec.from_dict`; everything downstream takes
these typed objects. Unknown keys are rejected with the closest valid name, wrong types and out-of-range
values are reported with their dotted path (`training.lr`), and the allowed values.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class SpecError(ValueError):
    """Bad configuration: names the field, what was wrong, and what is allowed."""

    def __init__(self, message: str, field_path: str = ""):
        self.field_path = field_path
        self.reason = message
        super().__init__(f"{field_path}: {message}" if field_path else message)

    def within(self, prefix: str) -> "SpecError":
        path = f"{prefix}.{self.field_path}" if self.field_path else prefix
        return SpecError(self.reason, path)


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise SpecError(message, field_name)


# ---------------------------------------------------------------------------------------------------
# Sections


@dataclass
class ModelSpec:
    name: str = _help("timm model name (any registered ViT, including the project's rft_* models)",
                      "rft_vit_cifar_patch8_32")
    source: Literal["embedded", "hub", "file", "random"] = _help(
        "where the weights come from: the checkpoint shipped in the package, the Hugging Face hub via "
        "timm (needs a network), a local .safetensors/.pth file, or random initialisation", "embedded")
    weights: str | None = _help("weight file for source=file (.safetensors, or .pth loaded with weights_only)", None)
    image_size: int | None = _help("input resolution; images are resized on the fly (default: the model's)", None)
    mean: list[float] | None = _help("normalisation mean inside the model (default: the model's pretrained config)", None)
    std: list[float] | None = _help("normalisation std inside the model (default: the model's pretrained config)", None)

    def __post_init__(self):
        check(bool(self.name.strip()), "name", "must be a timm model name, got an empty string")
        check(self.source != "file" or bool(self.weights), "weights",
              "source is 'file', so a weight file path is required (.safetensors or .pth)")
        check(self.source == "file" or self.weights is None, "weights",
              f"a weight file is only read with source 'file', but source is {self.source!r}")
        check(self.image_size is None or 8 <= self.image_size <= 1024, "image_size",
              f"must be between 8 and 1024 pixels, got {self.image_size}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            check(value is None or len(value) == 3, name, f"must list 3 numbers (R, G, B), got {value}")
        check(self.std is None or all(s > 0 for s in self.std), "std", f"must be positive, got {self.std}")


@dataclass
class StrategySpec:
    name: str = _help("fine-tuning strategy: full, linear, bitfit, lora, ia3, adapter, compacter", "lora")
    options: dict[str, Any] = _help("the strategy's own hyperparameters (see `rft strategies --help`)", factory=dict)


@dataclass
class DatasetSpec:
    name: str = _help("dataset: digits, cifar10, cifar100, caltech256, cub200, stanford_dogs, domainnet, parquet", "digits")
    label: str | None = _help("the dataset's name in results, run ids and reports (default: name); keeps one name "
                              "for one task whichever loader reads it (e.g. cifar100 online, parquet offline)", None)
    root: str | None = _help("local folder holding the data (for parquet: the base of relative train/test paths)", None)
    download: bool = _help("let torchvision download cifar10/cifar100 into root when missing (needs a network)", False)
    val_fraction: float = _help("share of the training data held out, seeded, as the validation split", 0.1)
    split_seed: int = _help("seed of every split and evaluation subset (kept apart from the training seed, so "
                            "runs with different seeds are measured on the same images)", 0)
    train_limit: int | None = _help("use a seeded subset of this many training images", None)
    corruptions: list[str] = _help("OOD corruption domains for datasets without natural domains",
                                   factory=lambda: ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"])
    severity: int = _help("corruption severity, 1 (mild) to 5 (severe), as in CIFAR-10-C", 3)
    options: dict[str, Any] = _help("the dataset's own settings (see the dataset registry)", factory=dict)

    def __post_init__(self):
        check(0.0 <= self.val_fraction < 0.9, "val_fraction", f"must be in [0, 0.9), got {self.val_fraction}")
        check(self.train_limit is None or self.train_limit > 0, "train_limit",
              f"must be a positive number of images, got {self.train_limit}")
        check(1 <= self.severity <= 5, "severity", f"must be 1 to 5, got {self.severity}")
        check(0 <= self.split_seed < 2**32, "split_seed", f"must be in [0, 2^32), got {self.split_seed}")
        check(self.label is None or bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}", self.label)), "label",
              f"use 1-100 letters, digits, '_', '.', '=' or '-' (it names files), got {self.label!r}")

    @property
    def title(self) -> str:
        """What results call this dataset: the label, else the loader's name."""
        return self.label or self.name


@dataclass
class TrainingSpec:
    epochs: float | None = _help("training length in passes over the train split (give epochs or steps)", None)
    steps: int | None = _help("training length in optimizer steps (give epochs or steps)", None)
    batch_size: int = _help("training batch size", 32)
    lr: float = _help("AdamW learning rate", 1e-3)
    weight_decay: float = _help("AdamW weight decay", 1e-2)
    warmup_fraction: float = _help("linear warm-up, as a fraction of all steps, before the cosine decay", 0.1)
    grad_clip: float | None = _help("clip the gradient norm to this value (off when null)", None)
    seed: int = _help("seed of initialisation, data order and everything else random in training", 0)
    device: Literal["auto", "cpu", "cuda"] = _help("auto takes the GPU when there is one", "auto")
    precision: Literal["auto", "fp32", "bf16"] = _help("auto: bf16 autocast on GPU, fp32 on CPU", "auto")
    augment: Literal["none", "crop_flip"] = _help(
        "training augmentation: none, or random crop (padding 1/8 of the size) and horizontal flip, seeded per step",
        "none")
    checkpoint: bool = _help("save a resumable checkpoint at every evaluation point", True)
    num_workers: int = _help("DataLoader worker processes for training batches", 0)

    def __post_init__(self):
        check(self.epochs is None or self.steps is None, "epochs",
              f"give epochs or steps, not both (got epochs={self.epochs}, steps={self.steps})")
        check(self.epochs is None or 0 < self.epochs <= 10_000, "epochs", f"must be in (0, 10000], got {self.epochs}")
        check(self.steps is None or 0 < self.steps <= 10_000_000, "steps", f"must be in [1, 10000000], got {self.steps}")
        check(1 <= self.batch_size <= 65_536, "batch_size", f"must be 1 to 65536, got {self.batch_size}")
        check(0 < self.lr < 10, "lr", f"must be in (0, 10), got {self.lr}")
        check(0 <= self.weight_decay < 10, "weight_decay", f"must be in [0, 10), got {self.weight_decay}")
        check(0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be positive or null, got {self.grad_clip}")
        check(0 <= self.num_workers <= 64, "num_workers", f"must be 0 to 64, got {self.num_workers}")
        check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2^32), got {self.seed}")
        if self.epochs is None and self.steps is None:
            self.epochs = 1.0


@dataclass
class PGDSpec:
    eps: float = _help("L-inf radius in [0,1] pixel units (the paper: 1/255)", 1 / 255)
    alpha: float = _help("step size in [0,1] pixel units (the paper: 0.25/255)", 0.25 / 255)
    steps: int = _help("PGD iterations (the paper: 15)", 15)
    random_start: bool = _help("start from a uniform random point in the eps-ball", True)
    examples: int | None = _help("attack the first N images of the test evaluation subset (null: all of it)", None)
    extra_eps: list[float] = _help(
        "more L-inf radii attacked at every evaluation point, on the same images with the same steps and alpha "
        "scaled alike (alpha * radius / eps); stored as pgd_adv_acc/<radius> columns (e.g. pgd_adv_acc/4/255)",
        factory=list)

    def __post_init__(self):
        check(0 < self.eps <= 1, "eps", f"must be in (0, 1] (pixel units: 1/255 = {1/255:.5f}), got {self.eps}")
        for i, radius in enumerate(self.extra_eps):
            check(0 < radius <= 1, f"extra_eps[{i}]", f"must be in (0, 1] (pixel units), got {radius}")
        radii = [round(r * 255, 6) for r in [self.eps, *self.extra_eps]]
        check(len(set(radii)) == len(radii), "extra_eps",
              f"radii must differ from eps and from each other, got eps {self.eps:g} and {self.extra_eps}")
        check(0 < self.alpha <= 1, "alpha", f"must be in (0, 1], got {self.alpha}")
        check(1 <= self.steps <= 10_000, "steps", f"must be 1 to 10000, got {self.steps}")
        check(self.examples is None or self.examples > 0, "examples", f"must be positive or null, got {self.examples}")


@dataclass
class ScheduleSegment:
    until: int | None = _help("last step of this segment (null: no end)", None)
    every: int = _help("evaluate at multiples of this many steps inside the segment", 50)

    def __post_init__(self):
        check(self.every >= 1, "every", f"must be at least 1, got {self.every}")
        check(self.until is None or self.until >= 0, "until", f"must be a step >= 0 or null, got {self.until}")


@dataclass
class EvaluationSpec:
    schedule: Union[Literal["default", "paper_code"], list[ScheduleSegment]] = _help(
        "when to evaluate: 'default' (every 50 to 700, every 1000 to 3000, every 6000 after), 'paper_code' "
        "(the paper's public code), or a list of {until, every} segments; step 0 and the final step always",
        "default")
    train_examples: int = _help("size of the fixed, seeded train subset for train_clean_acc", 500)
    test_examples: int | None = _help("size of the fixed, seeded test subset (null: the whole test split)", 1000)
    ood_examples: int | None = _help("images per OOD domain (null: the whole domain)", 500)
    batch_size: int = _help("evaluation batch size (clean and PGD)", 256)
    pgd: PGDSpec = _help("the adversarial evaluation", factory=PGDSpec)

    def __post_init__(self):
        check(self.train_examples >= 1, "train_examples", f"must be positive, got {self.train_examples}")
        check(self.test_examples is None or self.test_examples >= 1, "test_examples",
              f"must be positive or null, got {self.test_examples}")
        check(self.ood_examples is None or self.ood_examples >= 1, "ood_examples",
              f"must be positive or null, got {self.ood_examples}")
        check(1 <= self.batch_size <= 65_536, "batch_size", f"must be 1 to 65536, got {self.batch_size}")
        if isinstance(self.schedule, list):
            check(len(self.schedule) > 0, "schedule", "a custom schedule needs at least one {until, every} segment")
            ends = [s.until for s in self.schedule]
            check(all(u is not None for u in ends[:-1]), "schedule",
                  "only the last segment may have until: null (no end)")
            bounded = [u for u in ends if u is not None]
            check(bounded == sorted(set(bounded)), "schedule", f"segment ends must increase strictly, got {ends}")


@dataclass
class OutputSpec:
    results: str = _help("result store: a folder or URI; each run writes <run_id>.parquet there", "results/store")
    checkpoints: str = _help("folder for resumable checkpoints (one per run, overwritten)", "results/checkpoints")
    run_id: str | None = _help("name of the run (default: derived from strategy, dataset, lr, weight decay, seed)", None)


@dataclass
class RunSpec:
    model: ModelSpec = _help("the backbone", factory=ModelSpec)
    strategy: StrategySpec = _help("the fine-tuning strategy", factory=StrategySpec)
    dataset: DatasetSpec = _help("the downstream data", factory=DatasetSpec)
    training: TrainingSpec = _help("the optimisation", factory=TrainingSpec)
    evaluation: EvaluationSpec = _help("what is measured, and when", factory=EvaluationSpec)
    output: OutputSpec = _help("where results and checkpoints go", factory=OutputSpec)

    @property
    def run_id(self) -> str:
        if self.output.run_id:
            return self.output.run_id
        t = self.training
        return f"{self.strategy.name}-{self.dataset.title}-lr{t.lr:g}-wd{t.weight_decay:g}-s{t.seed}"

    @classmethod
    def from_dict(cls, data: Any) -> "RunSpec":
        spec = build(cls, data, "")
        # Strategy and dataset options are checked against their own registered configs here, so a
        # typo fails before any data is read.
        from rft_ray.datasets import dataset_config
        from rft_ray.strategies import strategy_config
        strategy_config(spec.strategy.name, spec.strategy.options)
        dataset_config(spec.dataset.name, spec.dataset.options)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


# Limits on what a spec file may expand to: a spec is a few hundred values; an adversarial file (YAML aliases
# nested to a "billion laughs", or lists nested thousands deep) must fail here, not hang a later deep copy.
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 64


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"spec file {str(path)!r} is not UTF-8 text ({err})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"spec file {str(path)!r} is not valid YAML: {err}") from err
    except (ValueError, RecursionError, OverflowError) as err:  # e.g. a 5000-digit number, nesting too deep
        raise SpecError(f"spec file {str(path)!r} cannot be read as a spec: {type(err).__name__}: {err}") from err
    try:
        return plain_data(data) if data is not None else {}
    except SpecError as err:
        raise SpecError(f"{err} (in {path})") from err


def plain_data(data: Any) -> Any:
    """YAML values as JSON-like plain data: dates become ISO strings; binary values, too many values (aliases
    expanded) or too deep a nesting are errors naming where they are."""
    import datetime

    count = 0

    def walk(value: Any, where: str, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_SPEC_VALUES:
            raise SpecError(f"the spec holds more than {MAX_SPEC_VALUES} values (counting each use of a YAML alias); "
                            "a spec is a few hundred")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"is nested more than {MAX_SPEC_DEPTH} levels deep", where)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(key, (datetime.date, datetime.datetime)):
                    key = key.isoformat()
                elif not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise SpecError(f"has a key of type {type(key).__name__}; keys must be names", where)
                out[key] = walk(item, _join(where, str(key)), depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [walk(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(items)]
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise SpecError(f"holds a {type(value).__name__} value; a spec holds numbers, strings, lists and mappings",
                        where)

    return walk(data, "", 0)


def load_spec(cls: Any, path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """A spec class (RunSpec, ExperimentSpec) from a YAML file with dotted overrides; errors name the file."""
    data = load_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return cls.from_dict(data)
    except SpecError as err:
        raise SpecError(f"{err} (in {path})") from err


def load_run_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    return load_spec(RunSpec, path, overrides)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` items (values parsed as YAML) into dotted overrides."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"--set takes key=value (e.g. training.lr=1e-4), got {item!r}", "--set")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise SpecError(f"the value of {key.strip()!r} is not valid YAML: {err}", "--set") from None
    return overrides


def apply_overrides(data: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`training.lr`) on a plain spec dict; used by CLI flags and sweeps."""
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(data).__name__}")
    try:
        data = json.loads(json.dumps(data))  # deep copy of plain data
    except (TypeError, ValueError, RecursionError) as err:
        raise SpecError(f"a spec must hold plain data (numbers, strings, lists, mappings): {err}") from err
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SpecError(f"cannot set {dotted!r}: {key!r} is not a section")
        node[last] = value
    return data


# ---------------------------------------------------------------------------------------------------
# A small strict dataclass builder: types from annotations, errors with dotted paths.


def build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"must be a mapping of {cls.__name__} settings, got {_describe(data)}", path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in data if key not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"unknown key {key!r}.{hint} Allowed: {', '.join(names)}", _join(path, str(key)))
    kwargs = {key: convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise err.within(path) if path else err


def convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return convert(arm, value, path)
            except SpecError as err:
                if err.field_path != path:
                    raise  # the value had this arm's shape and failed inside it: that error is the useful one
                errors.append(err.reason)
        raise SpecError(" or ".join(dict.fromkeys(errors)) if errors else f"got {_describe(value)}", path)
    if origin is Literal:
        if value in args:
            return value
        raise SpecError(f"must be one of {', '.join(map(repr, args))}, got {_describe(value)}", path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"must be a list, got {_describe(value)}", path)
        return [convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"must be a mapping, got {_describe(value)}", path)
        return {str(k): convert(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(f"must be true or false, got {_describe(value)}", path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 256:  # far beyond every range; too long even to print in a message
                raise SpecError(f"is out of range, got {_describe(value)}", path)
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise SpecError(f"must be a whole number, got {_describe(value)}", path)
    if tp is float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise SpecError(f"must be a finite number (fractions like 1/255 are allowed), got {_describe(value)}", path)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise SpecError(f"must be a string, got {_describe(value)}", path)
    raise TypeError(f"spec type {tp!r} at {path} is not supported")  # a bug in a spec dataclass, not input


_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)  # OverflowError for an int beyond float range: not a usable number
        if isinstance(value, str):
            match = _FRACTION.match(value)
            if match and float(match.group(2)) != 0:
                return float(match.group(1)) / float(match.group(2))
            return float(value)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return None


def _describe(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits (int)"
    try:
        text = repr(value)
    except ValueError:  # e.g. a list holding an integer too long to print
        text = f"<a {type(value).__name__} too large to show>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build_options(config_cls: type, options: dict[str, Any], path: str) -> Any:
    """Validate a registered component's options dict against its config dataclass."""
    return build(config_cls, options, path)
