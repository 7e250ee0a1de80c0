"""Validation metrics at every evaluation point: seeded, class-stratified subsets of the held-out validation
split (never a test image), PGD on a part of them, OOD validation when asked."""
import numpy as np
import torch

from rft_ray.config import ModelSpec, RunSpec
from rft_ray.data.base import ArrayImageSet, DataBundle, TransformedImageSet
from rft_ray.evaluation.evaluator import EvalSets, evaluate
from rft_ray.evaluation.robustness import accuracy, clean_correct
from rft_ray.models.backbones import create_classifier

CPU = torch.device("cpu")
SPLITS = {"train": 0, "val": 1, "test": 2, "sketch": 3}  # each split's images carry its number in one pixel


def tagged(split: str, classes: int, per_class: int, size: int = 4) -> ArrayImageSet:
    """Images stored class by class whose pixels say which split and which image they are: (0,0) the split,
    (0,1) and (0,2) the image's index."""
    labels = np.repeat(np.arange(classes), per_class)
    pixels = np.zeros((len(labels), size, size, 3), dtype=np.uint8)
    pixels[:, 0, 0, 0] = SPLITS[split]
    pixels[:, 0, 1, 0], pixels[:, 0, 2, 0] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256
    return ArrayImageSet(pixels, labels, size)


def ids(images: torch.Tensor) -> set[tuple[int, int]]:
    """(split, index) of each image."""
    return {(int(i[0, 0, 0]), int(i[0, 0, 1]) + 256 * int(i[0, 0, 2])) for i in images}


def invert(image: torch.Tensor, index: int) -> torch.Tensor:
    return 255 - image


def bundle(val_per_class: int = 30) -> DataBundle:
    val, test = tagged("val", 10, val_per_class), tagged("test", 10, 50)
    return DataBundle(train=tagged("train", 10, 100), val=val, test=test,
                      ood={"invert": TransformedImageSet(test, invert), "sketch": tagged("sketch", 10, 40)},
                      class_names=[str(c) for c in range(10)], image_size=4,
                      val_ood={"invert": TransformedImageSet(val, invert)})


def spec(**validation) -> RunSpec:
    return RunSpec.from_dict({"dataset": {"split_seed": 4}, "evaluation": {
        "train_examples": 50, "test_examples": 100, "ood_examples": 200,
        "validation": {"examples": 100, "pgd_examples": 20, **validation}}})


def test_validation_subsets_are_seeded_class_stratified_and_only_validation_images():
    sets = EvalSets.from_bundle(bundle(), spec())
    v = sets.validation
    assert {split for split, _ in ids(v.clean.images)} == {SPLITS["val"]} and len(ids(v.clean.images)) == 100
    assert set(np.bincount(v.clean.labels.numpy(), minlength=10)) == {10}  # 100 of 300: 10 per class
    assert set(np.bincount(v.clean.labels[v.pgd_index].numpy(), minlength=10)) == {2}  # PGD: 2 per class
    assert len(set(v.pgd_index.tolist())) == 20
    again = EvalSets.from_bundle(bundle(), spec())
    assert torch.equal(again.validation.clean.images, v.clean.images)
    assert torch.equal(again.validation.pgd_index, v.pgd_index)
    other = EvalSets.from_bundle(bundle(), RunSpec.from_dict({**spec().to_dict(), "dataset": {"split_seed": 5}}))
    assert ids(other.validation.clean.images) != ids(v.clean.images)  # the split seed draws it
    assert v.ood == {}  # OOD validation only when asked


def test_ood_validation_corrupts_validation_images_and_holds_out_what_the_test_subset_leaves():
    sets = EvalSets.from_bundle(bundle(), spec(ood=True, ood_examples=100))
    v = sets.validation
    assert sorted(v.ood) == ["invert", "sketch"]
    inverted = 255 - v.ood["invert"].images  # undo the corruption: validation images, never test ones
    assert {split for split, _ in ids(inverted)} == {SPLITS["val"]}
    tested, validated = ids(sets.ood["sketch"].images), ids(v.ood["sketch"].images)
    assert len(tested) == 200 and len(validated) == 100 and not tested & validated  # 400 images: disjoint parts
    assert set(np.bincount(v.ood["sketch"].labels.numpy(), minlength=10)) == {10}
    assert v.ood_sizes == {"invert": 300, "sketch": 200}
    # A domain whose test subset is the whole domain has nothing left to validate on: left out.
    whole = EvalSets.from_bundle(bundle(), RunSpec.from_dict({**spec(ood=True).to_dict(), "evaluation": {
        **spec(ood=True).to_dict()["evaluation"], "ood_examples": None}}))
    assert sorted(whole.validation.ood) == ["invert"]


def test_evaluate_measures_validation_like_test_and_nothing_when_off_or_empty():
    model = create_classifier(ModelSpec(source="random", image_size=16), num_classes=10, seed=0).eval()
    digits = _digits_bundle()
    run = spec(ood=True, ood_examples=50)
    sets = EvalSets.from_bundle(digits, run)
    metrics = evaluate(model, sets, run, CPU, None)
    v = sets.validation
    expected = accuracy(clean_correct(model, v.clean.images, v.clean.labels, 64, CPU, None))
    assert metrics["val_clean_acc"] == expected and metrics["val_images"] == len(v.clean)
    assert metrics["val_pgd_images"] == 20 and 0 <= metrics["val_pgd_adv_acc"] <= metrics["val_clean_acc"]
    assert metrics["val_ood_images"] == 50 and 0 <= metrics["val_ood_accuracy"] <= 1
    for off in (spec(enabled=False), None):
        sets = EvalSets.from_bundle(digits if off else _digits_bundle(val=False), off or run)
        assert sets.validation is None
        assert not any(key.startswith("val_") for key in evaluate(model, sets, off or run, CPU, None))


def _digits_bundle(val: bool = True) -> DataBundle:
    """The digits the robustness tests' model was trained on, at its 16 px."""
    from rft_ray.config import DatasetSpec
    from rft_ray.data import create_bundle

    return create_bundle(DatasetSpec(name="digits", corruptions=["contrast"], val_fraction=0.2 if val else 0.0), 16)
