import pytest
import torch
import torch.nn.functional as F
import torchattacks

from rft_ray.config import ModelSpec
from rft_ray.evaluation.robustness import PGDConfig, clean_correct, pgd_robust
from rft_ray.models.backbones import create_classifier

CPU = torch.device("cpu")


def trained_model(steps: int):
    """A small ViT trained briefly on a learnable synthetic task: accuracy high, robustness in between."""
    torch.manual_seed(0)
    model = create_classifier(ModelSpec(source="random", image_size=16), num_classes=4, seed=0)
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(4, 3, 16, 16, generator=g)
    labels = torch.arange(256) % 4
    images = (prototypes[labels] * 0.6 + 0.4 * torch.rand(256, 3, 16, 16, generator=g)).clamp(0, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % 256
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), images, labels


def reference_any_iterate(model, images, labels, config, seed):
    """Full-batch PGD without early exit, tracking whether any iterate (or the clean input) was wrong."""
    torch.manual_seed(seed)
    adv = (images + torch.empty_like(images).uniform_(-config.eps, config.eps)).clamp(0, 1)
    with torch.no_grad():
        survived = model(images).argmax(1) == labels
    for step in range(config.steps + 1):
        adv.requires_grad_(True)
        logits = model(adv)
        survived &= (logits.argmax(1) == labels).detach()
        if step == config.steps:
            break
        grad, = torch.autograd.grad(F.cross_entropy(logits, labels), adv)
        adv = adv.detach() + config.alpha * grad.sign()
        adv = torch.min(torch.max(adv, images - config.eps), images + config.eps).clamp(0, 1)
    return survived


@pytest.fixture(scope="module")
def model_and_data():
    return trained_model(40)


# Robust accuracy high (early in fine-tuning), middling, and low (late): eps chosen on this model.
@pytest.mark.parametrize("eps, low, high", [(8 / 255, 0.8, 1.0), (16 / 255, 0.2, 0.8), (22 / 255, 0.0, 0.3)])
def test_pgd_matches_torchattacks_and_is_never_higher(model_and_data, eps, low, high):
    model, images, labels = model_and_data
    config = PGDConfig(eps=eps, alpha=eps / 4, steps=10)
    ours = pgd_robust(model, images, labels, config, batch_size=64, device=CPU, seed=7).float().mean().item()
    attack = torchattacks.PGD(model, eps=config.eps, alpha=config.alpha, steps=config.steps, random_start=True)
    theirs = []
    torch.manual_seed(7)  # our generator seeded 7 draws the same random start, batch by batch
    for start in range(0, len(images), 64):
        x, y = images[start:start + 64], labels[start:start + 64]
        adversarial = attack(x, y)
        with torch.no_grad():
            theirs.append(model(adversarial).argmax(1) == y)
    theirs = torch.cat(theirs).float().mean().item()
    assert low <= ours <= high
    assert ours <= theirs + 1e-9
    assert theirs - ours <= 0.01
    clean = clean_correct(model, images, labels, 64, CPU).float().mean().item()
    assert ours <= clean


def test_early_exit_is_exact(model_and_data):
    model, images, labels = model_and_data
    config = PGDConfig(eps=16 / 255, alpha=4 / 255, steps=8)
    ours = pgd_robust(model, images, labels, config, batch_size=len(images), device=CPU, seed=3)
    reference = reference_any_iterate(model, images, labels, config, seed=3)
    assert 0 < ours.sum() < len(images)  # the case is not trivial
    assert torch.equal(ours, reference)


def test_pgd_is_deterministic_and_uint8_input_is_pixel_space(model_and_data):
    model, images, labels = model_and_data
    config = PGDConfig(eps=16 / 255, alpha=4 / 255, steps=5)
    pixels = (images * 255).round().to(torch.uint8)
    first = pgd_robust(model, pixels, labels, config, 50, CPU, seed=1)
    second = pgd_robust(model, pixels, labels, config, 50, CPU, seed=1)
    assert torch.equal(first, second)
    assert torch.equal(first, pgd_robust(model, pixels.float() / 255, labels, config, 50, CPU, seed=1))


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0.0, "alpha": 0.1, "steps": 1}, "eps must be in"),
    ({"eps": 0.1, "alpha": 0.1, "steps": 0}, "steps must be at least 1"),
])
def test_bad_pgd_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PGDConfig(**kwargs)


def test_a_given_clean_verdict_gives_the_same_attack(model_and_data):
    """Passing the test pass's clean verdict skips PGD's own clean forward and changes nothing."""
    model, images, labels = model_and_data
    labels = labels.clone()
    labels[::5] = (labels[::5] + 1) % 4  # a fifth of the images now wrong on the clean input
    config = PGDConfig(eps=16 / 255, alpha=4 / 255, steps=5)
    clean = clean_correct(model, images, labels, 64, CPU)
    assert 0 < clean.sum() < len(images)
    own = pgd_robust(model, images, labels, config, 50, CPU, seed=2)
    given = pgd_robust(model, images, labels, config, 50, CPU, seed=2, clean_ok=clean)
    assert torch.equal(own, given)
    # An image declared wrong is never attacked, so never counted robust.
    none_ok = pgd_robust(model, images, labels, config, 50, CPU, seed=2, clean_ok=torch.zeros_like(clean))
    assert not none_ok.any()
    with pytest.raises(ValueError, match="clean_ok has 3 verdicts"):
        pgd_robust(model, images, labels, config, 50, CPU, clean_ok=clean[:3])


@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("tf32", True), ("auto", True)])
def test_pgd_arithmetic_sets_tf32_for_its_duration_on_cuda(precision, tf32):
    """fp32 is strict on CUDA (no TF32 matmuls, and no TF32 cuDNN convolutions, which torch allows by default);
    tf32 and auto allow both; the settings before the attack come back after it. On the CPU nothing changes."""
    from rft_ray.evaluation.robustness import pgd_arithmetic

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (not tf32), (not tf32)
    try:
        with pgd_arithmetic(precision, torch.device("cuda")) as dtype:
            assert dtype is None
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (not tf32, not tf32)
        with pgd_arithmetic(precision, torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32 == (not tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
