"""The run spec: every setting of one fine-tuning run, its types and ranges validated once, here.

Names of strategies and datasets (and their options) are checked one floor up, against their
registries, by `rft_ray.specs` (this floor imports nothing of the project but the machinery).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal, Union

from rft_ray.config.fields import SpecError, build, check, described, to_plain
from rft_ray.config.metrics import same_radius
from rft_ray.config.recipes import with_recipe


@dataclass
class ModelSpec:
    name: str = described("timm model name (any registered ViT, including the project's rft_* models)",
                          "rft_vit_cifar_patch8_32")
    source: Literal["embedded", "hub", "file", "random"] = described(
        "where the weights come from: the checkpoint shipped in the package, the Hugging Face hub via "
        "timm (needs a network), a local .safetensors/.pth file, or random initialisation", "embedded")
    weights: str | None = described("weight file for source=file (.safetensors, or .pth loaded with weights_only)", None)
    image_size: int | None = described("input resolution; images are resized on the fly (default: the model's)", None,
                                       bounds="[8, 1024]")
    mean: list[float] | None = described("normalisation mean inside the model (default: the model's pretrained config)", None)
    std: list[float] | None = described("normalisation std inside the model (default: the model's pretrained config)", None,
                                        bounds="(0, inf)")
    keep_head: bool = described(
        "load the pretrained weights' classifier into the run's head (only to continue on the same label set; "
        "refused when its class count differs); by default every run starts from a fresh, seeded head", False)

    def __post_init__(self):
        check(bool(self.name.strip()), "name", "must be a timm model name, got an empty string")
        check(not (self.keep_head and self.source == "random"), "keep_head",
              "source 'random' has no pretrained classifier to keep; use source embedded, hub or file, or "
              "keep_head: false")
        check(self.source != "file" or bool(self.weights), "weights",
              "source is 'file', so a weight file path is required (.safetensors or .pth)")
        check(self.source == "file" or self.weights is None, "weights",
              f"a weight file is only read with source 'file', but source is {self.source!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            check(value is None or len(value) == 3, name, f"must list 3 numbers (R, G, B), got {value}")


@dataclass
class StrategySpec:
    name: str = described("fine-tuning strategy: full, linear, bitfit, lora, ia3, adapter, compacter, lp_ft", "lora")
    options: dict[str, Any] = described("the strategy's own hyperparameters (see `rft strategies --help`)", factory=dict)


# The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, 2019), in the paper's order; `corruptions:
# cifar10-c` stands for them. Kept here, below rft_ray.data, because the spec expands the shorthand.
CIFAR10_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}")


def dataset_title(name: str, label: str | None, root: str | None) -> str:
    """What results, run ids and reports call a dataset: its label; else, for `imagefolder` (your own images),
    the name of its folder (`--data-root mydata` makes `mydata`), made file-name safe; else the loader's name."""
    if label:
        return label
    if name == "imagefolder" and root and "://" not in root:
        folder = re.sub(r"[^A-Za-z0-9_.=-]+", "_", os.path.basename(os.path.abspath(os.path.expanduser(root))))
        folder = folder.lstrip("_.=-")[:100]
        if _LABEL.fullmatch(folder):
            return folder
    return name


@dataclass
class DatasetSpec:
    name: str = described("dataset: digits, parquet, imagefolder (your own images), cifar10, cifar100, caltech256, "
                          "cub200, stanford_dogs, domainnet", "digits")
    label: str | None = described("the dataset's name in results, run ids and reports (default: name; for imagefolder "
                                  "its folder's name); keeps one name for one task whichever loader reads it (e.g. "
                                  "cifar100 online, parquet offline)", None)
    root: str | None = described("local folder holding the data (for parquet: the base of relative train/test paths)", None)
    download: bool = described("let torchvision download cifar10/cifar100 into root when missing (needs a network)", False)
    node_local: bool = described("the data is at `root` on every node that runs trials (e.g. synced by cluster.yaml), "
                                 "not on the machine a sweep starts from: each trial checks it where it runs", False)
    val_fraction: float = described("share of the training data held out, seeded, as the validation split", 0.1,
                                    bounds="[0, 0.9)")
    split_seed: int = described("seed of every split and evaluation subset (kept apart from the training seed, so "
                                "runs with different seeds are measured on the same images)", 0, bounds="[0, 2^32)")
    train_limit: int | None = described("use a seeded subset of this many training images", None, bounds="[1, inf)")
    corruptions: Union[list[str], Literal["cifar10-c"]] = described(
        "OOD corruption domains for datasets without natural domains: a list of names (see "
        "rft_ray/data/corruptions), or cifar10-c for the 15 of CIFAR-10-C",
        factory=lambda: ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"])
    severity: int = described("corruption severity, 1 (mild) to 5 (severe), as in CIFAR-10-C", 3, bounds="[1, 5]")
    ood: dict[str, str] = described(
        "your own OOD test sets, for any dataset, evaluated like the corruption domains (stored as ood_acc/<name>): "
        "name -> an image folder <path>/<class>/* or a Parquet file (path or URI), whose classes are named as the "
        "training classes (any subset of them)", factory=dict)
    options: dict[str, Any] = described("the dataset's own settings (see the dataset registry)", factory=dict)

    def __post_init__(self):
        if isinstance(self.corruptions, str):
            check(self.corruptions == "cifar10-c", "corruptions",
                  f"must be a list of corruption names or 'cifar10-c', got {self.corruptions!r}")
            self.corruptions = list(CIFAR10_C)  # expanded here, so results and cost estimates see the names
        check(self.label is None or bool(_LABEL.fullmatch(self.label)), "label",
              f"use 1-100 letters, digits, '_', '.', '=' or '-' (it names files), got {self.label!r}")
        for name, source in self.ood.items():
            check(bool(_LABEL.fullmatch(name)), "ood", f"a domain name uses 1-100 letters, digits, '_', '.', '=' "
                  f"or '-' (it names result columns, ood_acc/<name>), got {name!r}")
            check(name not in self.corruptions, f"ood.{name}", f"{name!r} is also one of dataset.corruptions; give "
                  "your own OOD set another name")
            check(bool(str(source).strip()), f"ood.{name}", "must be an image folder or a Parquet file, got ''")

    @property
    def title(self) -> str:
        """What results call this dataset (`dataset_title`)."""
        return dataset_title(self.name, self.label, self.root)


@dataclass
class TrainingSpec:
    epochs: float | None = described("training length in passes over the train split (give epochs or steps)", None,
                                     bounds="(0, 10000]")
    steps: int | None = described("training length in optimizer steps (give epochs or steps)", None,
                                  bounds="[1, 10000000]")
    batch_size: int = described("training batch size", 32, bounds="[1, 65536]")
    lr: float = described("AdamW learning rate", 1e-3, bounds="(0, 10)")
    weight_decay: float = described("AdamW weight decay", 1e-2, bounds="[0, 10)")
    warmup_fraction: float = described("linear warm-up, as a fraction of all steps, before lr_schedule", 0.1,
                                       bounds="[0, 1)")
    warmup_steps: int | None = described("linear warm-up in optimizer steps; when set, replaces warmup_fraction",
                                         None, bounds="[0, 10000000]")
    lr_schedule: Literal["cosine", "linear", "constant"] = described(
        "after the warm-up: cosine decay to 0, linear decay to 0, or the constant lr", "cosine")
    no_weight_decay: list[Literal["bias", "norm", "pos_embed", "cls_token"]] = described(
        "trainable parameters AdamW does not decay: biases, normalisation weights, the position embedding and the "
        "class token (as timm and Hugging Face trainers do; the Hugging Face Trainer exempts bias and norm only); "
        "[] decays every trainable parameter", factory=lambda: ["bias", "norm", "pos_embed", "cls_token"])
    grad_clip: float | None = described("clip the gradient norm to this value (off when null)", None,
                                        bounds="(0, inf)")
    seed: int = described("seed of initialisation, data order and everything else random in training", 0,
                          bounds="[0, 2^32)")
    device: Literal["auto", "cpu", "cuda"] = described("auto takes the GPU when there is one", "auto")
    precision: Literal["auto", "fp32", "bf16"] = described("auto: bf16 autocast on GPU, fp32 on CPU", "auto")
    augment: Literal["none", "crop_flip"] = described(
        "training augmentation: none, or random crop (padding 1/8 of the size) and horizontal flip, seeded per step",
        "none")
    checkpoint: bool = described("save a resumable checkpoint at every evaluation point", True)
    compile: bool = described("torch.compile the model in place (parameter names, checkpoints and results unchanged); "
                              "the first steps and the first attack pay the compilation", False)
    num_workers: Union[int, Literal["auto"]] = described(
        "DataLoader worker processes for training batches that are decoded per batch (splits too large to decode "
        "once); auto: the CPUs the run was given (Ray's OMP_NUM_THREADS for a trial, else this process's CPUs) "
        "less one for the training process", 0, bounds="[0, 64]")
    sharding: Literal["ddp", "fsdp"] = described(
        "how a trial's data-parallel workers (resources.workers_per_trial) hold the model: ddp (each a whole copy, "
        "gradients all-reduced) or fsdp (torch FSDP2: weights, gradients and AdamW state sharded over the workers, "
        "each transformer block gathered when it runs; for full and lp_ft, whose full fine-tuning may not fit one "
        "GPU); one worker trains alike either way", "ddp")

    def __post_init__(self):
        check(self.epochs is None or self.steps is None, "epochs",
              f"give epochs or steps, not both (got epochs={self.epochs}, steps={self.steps})")
        check(len(set(self.no_weight_decay)) == len(self.no_weight_decay), "no_weight_decay",
              f"lists a group twice: {self.no_weight_decay}")
        # Neither given: one epoch, and the run says so (`length_defaulted`; not a field, so not in the spec's dict).
        self.length_defaulted = self.epochs is None and self.steps is None
        if self.length_defaulted:
            self.epochs = 1.0


@dataclass
class PGDSpec:
    eps: float = described("L-inf radius in [0,1] pixel units (the paper: 1/255)", 1 / 255, bounds="(0, 1]",
                           note=f"pixel units: 1/255 = {1 / 255:.5f}")
    alpha: float = described("step size in [0,1] pixel units (the paper: 0.25/255)", 0.25 / 255, bounds="(0, 1]")
    steps: int = described("PGD iterations (the paper: 15)", 15, bounds="[1, 10000]")
    random_start: bool = described("start from a uniform random point in the eps-ball", True)
    examples: int | None = described(
        "attack a seeded, class-stratified subset of N images of the test evaluation subset (null: all of it)", None,
        bounds="[1, inf)")
    verdict: Literal["any_iterate", "final_iterate"] = described(
        "any_iterate: an image is robust only if the clean input and every iterate are classified correctly "
        "(attacks stop on an image once it is fooled; never above final_iterate); final_iterate: every image, "
        "clean errors too, is attacked for all steps and the last iterate alone is judged, as torchattacks "
        "and the paper's code do", "any_iterate")
    precision: Literal["auto", "fp32", "tf32", "bf16"] = described(
        "arithmetic of the attack's passes: fp32; tf32 (TF32 matmuls on CUDA, fp32 elsewhere); bf16 autocast; "
        "auto: tf32 on CUDA, fp32 on CPU", "auto")
    batch_size: int | None = described(
        "PGD batch size (null: evaluation.batch_size); the attack keeps activations for its backward pass, so it "
        "may need a smaller batch than the clean passes", None, bounds="[1, 65536]")
    extra_eps: list[float] = described(
        "more L-inf radii attacked at every evaluation point, on the same images with the same steps and alpha "
        "scaled alike (alpha * radius / eps); stored as pgd_adv_acc/<radius> columns (e.g. pgd_adv_acc/4/255)",
        factory=list, bounds="(0, 1]", note="pixel units")

    def __post_init__(self):
        radii = [self.eps, *self.extra_eps]
        distinct = all(not same_radius(a, b) for i, a in enumerate(radii) for b in radii[i + 1:])
        check(distinct, "extra_eps",
              f"radii must differ from eps and from each other, got eps {self.eps:g} and {self.extra_eps}")


@dataclass
class ScheduleSegment:
    until: int | None = described("last step of this segment (null: no end)", None, bounds="[0, inf)")
    every: int = described("evaluate at multiples of this many steps inside the segment", 50, bounds="[1, inf)")


@dataclass
class ValidationSpec:
    enabled: bool = described(
        "measure the validation split (dataset.val_fraction) at every evaluation point, as the test subset is: "
        "val_clean_acc, val_pgd_adv_acc (and val_ood_accuracy with ood); what a sweep's selections read, so that "
        "test numbers are only reported", True)
    examples: int | None = described(
        "size of the fixed, seeded, class-stratified validation subset for val_clean_acc (null: the whole "
        "validation split)", 500, bounds="[1, inf)")
    pgd_examples: int | None = described(
        "attack a seeded, class-stratified subset of N images of the validation subset, with evaluation.pgd's "
        "settings at its eps (not extra_eps), for val_pgd_adv_acc (null: all of it)", 200, bounds="[1, inf)")
    ood: bool = described(
        "also measure val_ood_accuracy: the corruptions applied to the validation subset, and for the dataset's "
        "own and your own OOD domains a seeded, class-stratified part of each domain that the test OOD subset "
        "does not use (a domain with none left is left out)", False)
    ood_examples: int | None = described("images per OOD domain for val_ood_accuracy (null: all there are)", 200,
                                         bounds="[1, inf)")


@dataclass
class EvaluationSpec:
    schedule: Union[Literal["default", "paper_code"], list[ScheduleSegment]] = described(
        "when to evaluate: 'default' (every 50 to 700, every 1000 to 3000, every 6000 after), 'paper_code' "
        "(the paper's public code), or a list of {until, every} segments; step 0 and the final step always",
        "default")
    train_examples: int | None = described(
        "size of the fixed, seeded, class-stratified train subset for train_clean_acc (null: the whole train split)", 500,
        bounds="[1, inf)")
    test_examples: int | None = described(
        "size of the fixed, seeded, class-stratified test subset (null: the whole test split)", 1000,
        bounds="[1, inf)")
    ood_examples: int | None = described(
        "images per OOD domain, a seeded, class-stratified subset (null: the whole domain)", 500, bounds="[1, inf)")
    batch_size: int = described("evaluation batch size (clean and PGD)", 256, bounds="[1, 65536]")
    pgd: PGDSpec = described("the adversarial evaluation", factory=PGDSpec)
    ood_pooling: Literal["equal", "by_size"] = described(
        "test_ood_accuracy: the mean of the domains' accuracies (equal), or weighted by each whole domain's number "
        "of images (by_size: the accuracy over the union of the domains, as the paper's code measures it)", "equal")
    validation: ValidationSpec = described("the validation metrics measured at every evaluation point",
                                           factory=ValidationSpec)

    def __post_init__(self):
        if isinstance(self.schedule, list):
            check(len(self.schedule) > 0, "schedule", "a custom schedule needs at least one {until, every} segment")
            ends = [s.until for s in self.schedule]
            check(all(u is not None for u in ends[:-1]), "schedule",
                  "only the last segment may have until: null (no end)")
            bounded = [u for u in ends if u is not None]
            check(bounded == sorted(set(bounded)), "schedule", f"segment ends must increase strictly, got {ends}")


@dataclass
class OutputSpec:
    results: str = described("result store: a folder or URI; each run writes <run_id>.parquet there", "results/store")
    checkpoints: str = described("folder for resumable checkpoints (one per run, overwritten)", "results/checkpoints")
    run_id: str | None = described("name of the run (default: <strategy>-<dataset>-<model>-lr<lr>-wd<weight decay>-s<seed>)",
                                   None)
    keep_checkpoints: Literal["none", "frontier", "all"] = described(
        "trainable weights kept at evaluation points, in the result store as checkpoints/<run_id>/step-<step>"
        ".safetensors: frontier (only the points on the run's own clean-vs-PGD accuracy front so far; files of "
        "points that fall off it are deleted), all (every point; full fine-tuning keeps the whole model each "
        "time) or none", "frontier")


# Strategies whose trials may shard the model (training.sharding: fsdp): those that fine-tune every weight. The
# parameter-efficient ones train a few MB; their frozen backbone gains nothing from sharding, and they keep DDP.
FSDP_STRATEGIES = ("full", "lp_ft")


@dataclass
class RunSpec:
    recipe: Literal["default", "paper_code"] = described(
        "a preset filling every setting the spec leaves out: default (this platform's defaults) or paper_code "
        "(the paper's public code, per strategy; see rft_ray/config/recipes.py and docs/fidelity.md)", "default")
    model: ModelSpec = described("the backbone", factory=ModelSpec)
    strategy: StrategySpec = described("the fine-tuning strategy", factory=StrategySpec)
    dataset: DatasetSpec = described("the downstream data", factory=DatasetSpec)
    training: TrainingSpec = described("the optimisation", factory=TrainingSpec)
    evaluation: EvaluationSpec = described("what is measured, and when", factory=EvaluationSpec)
    output: OutputSpec = described("where results and checkpoints go", factory=OutputSpec)

    def __post_init__(self):
        if self.training.sharding == "fsdp" and self.strategy.name not in FSDP_STRATEGIES:
            raise SpecError(f"fsdp shards the weights of strategies that train the whole backbone "
                            f"({', '.join(FSDP_STRATEGIES)}); strategy.name {self.strategy.name!r} trains few "
                            "parameters and keeps ddp: set training.sharding: ddp (or leave it out)",
                            "training.sharding")
        if self.training.sharding == "fsdp" and self.training.compile:
            raise SpecError("is not supported with training.sharding fsdp yet (the sharded copy FSDP trains is not "
                            "compiled); set training.compile: false, or training.sharding: ddp", "training.compile")

    @property
    def run_id(self) -> str:
        if self.output.run_id:
            return self.output.run_id
        t = self.training
        model = re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.model.name)  # hub names hold ':' and '/'; run ids name files
        return f"{self.strategy.name}-{self.dataset.title}-{model}-lr{t.lr:g}-wd{t.weight_decay:g}-s{t.seed}"

    @classmethod
    def from_dict(cls, data: Any) -> "RunSpec":
        """Types and ranges only; `rft_ray.specs.run_spec` also checks the strategy and dataset names. The recipe
        fills what `data` leaves out first, so every value the spec gives wins."""
        return build(cls, with_recipe(data, StrategySpec().name), "")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

