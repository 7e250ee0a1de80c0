"""The embedded default (the README's demo): real pretrained weights, real digits, the behaviour under study."""

from rft_ray.cli.demo import demo_spec
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.models.backbones import embedded_weights_path
from rft_ray.results.store import ResultStore
from rft_ray.training.runner import run_in_process


def test_embedded_checkpoint_ships_small():
    path = embedded_weights_path()
    assert path.is_file() and path.stat().st_size <= 5 * 1024 * 1024
    assert (path.parent / "MODEL_CARD.md").is_file()


def test_demo_run_follows_schedule_and_shows_the_tradeoff(tmp_path):
    spec = demo_spec("lora", tmp_path)
    records = run_in_process(spec, progress=False).records
    rows = ResultStore(spec.output.results).read().to_pylist()
    assert [r["step"] for r in rows] == EvalSchedule.from_spec(spec.evaluation).points(spec.training.steps)
    domains = {f"ood_acc/{d}" for d in spec.dataset.corruptions}
    for row in rows:
        assert 0 <= row["pgd_adv_acc"] <= row["test_clean_acc"] <= 1
        assert domains <= set(row) and all(0 <= row[d] <= 1 for d in domains)
    first, last = records[0], records[-1]
    assert last.test_clean_acc >= first.test_clean_acc + 0.2  # accuracy climbs from its step-0 value
    # PGD accuracy is measurably apart from both 0 and clean accuracy once the model has learned.
    assert last.pgd_adv_acc >= 0.05
    assert last.test_clean_acc - last.pgd_adv_acc >= 0.05
