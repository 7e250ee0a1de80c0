"""`rft attack`: stronger attacks on kept checkpoints, stored beside the runs and joined onto their rows.

One tiny LoRA run (random-init ViT on 16 px digits, 60 steps, every point kept) is trained once per module; the
tests attack copies of its store. Attacks in the default suite run on 12 images with a small budget; the
reference budget (100 iterations, 9 targets, 5000 queries) and the Ray path are `slow`."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import cli_error, tiny_run

from rft_ray.attack.point import attack_point
from rft_ray.attack.runner import plan_points, run_attacks
from rft_ray.attack.suite import AttackBudget, PassCounter, build_attack
from rft_ray.cli import main
from rft_ray.results.attacks import (
    ATTACK_SLUGS,
    AttackError,
    accuracy_column,
    images_column,
    parse_attacks,
    parse_radii,
    read_sidecar,
    record_attack_results,
    seconds_column,
    sidecar_path,
)
from rft_ray.results.store import ResultStore, StoreError
from rft_ray.results.verdicts import ATTACK_VERDICTS_DIR, verdicts_path
from rft_ray.specs import run_spec
from rft_ray.training.weights import front_steps

SMALL = AttackBudget(steps=5, targets=2, queries=40)
PGD_IMAGES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A store holding one run whose every evaluation point (steps 0, 20, 40, 60) kept its weights; the run
    also measured PGD at an extra radius, 2/255."""
    from rft_ray.training.runner import run_in_process

    root = tmp_path_factory.mktemp("trained")
    spec = run_spec(tiny_run(root, **{"output.keep_checkpoints": "all", "evaluation.pgd.examples": PGD_IMAGES,
                                      "evaluation.pgd.extra_eps": ["2/255"]}))
    run_in_process(spec, progress=False)
    return root / "store"


@pytest.fixture
def store_root(trained, tmp_path) -> str:
    """A copy of the trained store this test may write to."""
    shutil.copytree(trained, tmp_path / "store")
    return str(tmp_path / "store")


def only_run(root: str) -> str:
    [run_id] = ResultStore(root).run_ids()
    return run_id


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Names, parsing, the sidecar


def test_slugs_and_column_names():
    assert ATTACK_SLUGS == {"autoattack": "aa", "apgd-ce": "apgd_ce", "apgd-t": "apgd_t", "fab": "fab",
                            "square": "square", "pgd": "pgd_rerun"}
    assert accuracy_column("autoattack", 1 / 255) == "aa_adv_acc/1/255"
    assert accuracy_column("pgd", 0.5 / 255) == "pgd_rerun_adv_acc/0.5/255"  # never a training-time pgd_adv_acc
    assert images_column("apgd-t") == "apgd_t_images"
    assert seconds_column("square", 2 / 255) == "square_seconds/2/255"
    assert parse_attacks(["autoattack,pgd", "PGD", " fab "]) == ["autoattack", "pgd", "fab"]
    assert parse_radii(["1/255,2/255", "0.00392156862745098", "8/255"]) == [1 / 255, 2 / 255, 8 / 255]
    with pytest.raises(AttackError, match="unknown attack 'cw'.*autoattack, apgd-ce, apgd-t, fab, square, pgd"):
        parse_attacks(["pgd,cw"])
    with pytest.raises(AttackError, match="2/x"):
        parse_radii(["1/255,2/x"])
    with pytest.raises(AttackError, match=r"\(0, 1\]"):
        parse_radii(["300/255"])


def test_sidecar_merges_and_store_read_joins_it_leaving_the_run_files_alone(store_root):
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    run_file = store.run_path(run_id)
    before, rows_before = digest(run_file), store.read()
    record_attack_results(store.fs, store.path, run_id, [
        {"run_id": run_id, "step": 20, "aa_adv_acc/1/255": 0.5, "aa_images": 12, "aa_seconds/1/255": 3.0},
        {"run_id": run_id, "step": 60, "aa_adv_acc/1/255": 0.25, "aa_images": 12, "aa_seconds/1/255": 4.0}])
    # A second attack: the same (run, step, column) replaced, other columns and other steps kept.
    record_attack_results(store.fs, store.path, run_id, [
        {"run_id": run_id, "step": 60, "aa_adv_acc/1/255": 0.125, "pgd_rerun_adv_acc/1/255": 0.75},
        {"run_id": run_id, "step": 40, "pgd_rerun_adv_acc/1/255": 0.5}])
    sidecar = read_sidecar(store.fs, sidecar_path(store.path, run_id)).to_pylist()
    assert [(r["step"], r["aa_adv_acc/1/255"], r["aa_images"], r["pgd_rerun_adv_acc/1/255"]) for r in sidecar] == [
        (20, 0.5, 12, None), (40, None, None, 0.5), (60, 0.125, 12, 0.75)]

    assert digest(run_file) == before  # the run's own file is never touched
    assert store.run_ids() == [run_id]  # the attacks folder is not a run
    joined = store.read()
    assert joined.num_rows == rows_before.num_rows
    for name in rows_before.column_names:  # every row column, training-time PGD included, as it was
        assert str(joined.column(name).to_pylist()) == str(rows_before.column(name).to_pylist()), name  # NaN too
    assert joined.column("step").to_pylist() == [0, 20, 40, 60]
    assert joined.column("aa_adv_acc/1/255").to_pylist() == [None, 0.5, None, 0.125]
    assert joined.column("pgd_rerun_adv_acc/1/255").to_pylist() == [None, None, 0.5, 0.75]
    assert joined.column("aa_images").to_pylist() == [None, 12, None, 12]

    # A sidecar column named like a row column is refused, naming the folder.
    record_attack_results(store.fs, store.path, run_id, [{"run_id": run_id, "step": 0, "pgd_adv_acc": 0.0}])
    with pytest.raises(StoreError, match="attacks.*pgd_adv_acc"):
        store.read()


# ---------------------------------------------------------------------------------------------------
# The attacks


def test_pass_counter_tells_gradient_steps_from_plain_forwards():
    counter = PassCounter(torch.nn.Linear(4, 3))
    counter.requires_grad_(False)
    x = torch.rand(5, 4)
    with torch.no_grad():
        counter(x)
    counter(x)  # gradients on, but nothing requires one
    wanting = x.clone().requires_grad_(True)
    counter(wanting)  # could be differentiated, never is
    logits = counter(wanting[:2])
    torch.autograd.grad(logits.sum(), wanting)
    assert (counter.forward_backward, counter.forward_only) == (2, 15)


def test_autoattack_is_torchattacks_standard_chain_with_the_reference_budget():
    import torchattacks

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    theirs = torchattacks.AutoAttack(model, norm="Linf", eps=1 / 255, version="standard", n_classes=10, seed=0)
    ours = build_attack("autoattack", model, 1 / 255, num_classes=10, seed=0)
    assert [type(a) for a in ours.attacks] == [type(a) for a in theirs._autoattack.attacks]
    apgd, apgdt, fab, square = ours.attacks
    assert (apgd.loss, apgd.steps, apgdt.steps, apgdt.n_target_classes, fab.steps, fab.n_target_classes,
            fab.multi_targeted, square.n_queries) == ("ce", 100, 100, 9, 100, 9, True, 5000)
    assert {a.norm for a in ours.attacks} == {"Linf"} and {a.seed for a in ours.attacks} == {0}
    # Fewer classes than 10: every other class is a target.
    _, apgdt, fab, _ = build_attack("autoattack", model, 1 / 255, num_classes=4, seed=0).attacks
    assert apgdt.n_target_classes == fab.n_target_classes == 3


def test_every_attack_leaves_at_most_the_clean_correct_images_robust(store_root):
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    step, path = max(store.checkpoints(run_id).items())
    result = attack_point(store_root, run_id, step, path, list(ATTACK_SLUGS), None, "cpu", SMALL)
    record = {r.step: r for r in store.read_run(run_id)}[step]
    assert result.images == PGD_IMAGES == record.pgd_images
    assert 0 < result.clean_correct < PGD_IMAGES  # a point where the comparison says something
    robust = {name: result.robust[accuracy_column(name, 4 / 255)] for name in ATTACK_SLUGS}
    assert all(count <= result.clean_correct for count in robust.values()), robust
    assert result.columns[accuracy_column("apgd-ce", 4 / 255)] <= result.clean_correct / result.images
    # AutoAttack starts with APGD-CE on the same images and seed, then only takes more images away.
    assert robust["autoattack"] <= min(robust["apgd-ce"], robust["apgd-t"], robust["fab"], robust["square"])
    assert result.forward_backward > 0 and result.forward_only >= 40  # the clean pass over the 40 test images
    assert all(result.columns[seconds_column(name, 4 / 255)] > 0 for name in ATTACK_SLUGS)
    # Seeded: the same point attacked again gives the same verdicts.
    again = attack_point(store_root, run_id, step, path, ["square", "apgd-ce"], None, "cpu", SMALL)
    assert {k: again.robust[k] for k in again.robust} == {k: result.robust[k] for k in again.robust}


def test_a_checkpoint_on_a_remote_store_is_read_through_the_stores_filesystem(store_root, monkeypatch):
    """A store that is not a local folder (pyarrow's in-memory filesystem, as an object store would be; the
    weights file exists nowhere on disk): header and tensors are read through the store's filesystem
    (`checkpoint_metadata`, `load_finetuned(..., filesystem=)`), and the point measures what the run measured."""
    import pyarrow.fs as pafs

    import rft_ray.attack.point as point

    remote = pafs._MockFileSystem()
    monkeypatch.setattr(point, "filesystem_for", lambda root: (remote, "bucket/store"))
    run_id = only_run(store_root)
    step, path = max(ResultStore(store_root).checkpoints(run_id).items())
    key = f"bucket/store/checkpoints/{run_id}/step-{step}.safetensors"
    remote.create_dir(str(Path(key).parent), recursive=True)
    with remote.open_output_stream(key) as out:
        out.write(Path(path).read_bytes())
    assert not Path(key).exists()
    result = attack_point(store_root, run_id, step, key, ["pgd"], None, "cpu")
    assert result.columns["pgd_rerun_adv_acc/4/255"] == {r.step: r for r in ResultStore(store_root).read_run(
        run_id)}[step].pgd_adv_acc
    with pytest.raises(AttackError, match=f"not of run {run_id!r} step {step + 1}"):  # the header is checked
        attack_point(store_root, run_id, step + 1, key, ["pgd"], None, "cpu")



def test_pgd_rerun_reproduces_the_training_time_pgd_exactly(store_root):
    """Same images (the run's seeded PGD subset), same seed, same clean verdict, same arithmetic: the same
    accuracy to the bit, at the run's own radius and at its extra radius."""
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    records = {r.step: r for r in store.read_run(run_id)}
    for step, path in store.checkpoints(run_id).items():
        result = attack_point(store_root, run_id, step, path, ["pgd"], [4 / 255, 2 / 255], "cpu")
        assert result.columns["pgd_rerun_adv_acc/4/255"] == records[step].pgd_adv_acc, step
        assert result.columns["pgd_rerun_adv_acc/2/255"] == records[step].pgd_extra["2/255"], step
    assert len({r.pgd_adv_acc for r in records.values()}) > 1  # the points differ: equality is not vacuous


# ---------------------------------------------------------------------------------------------------
# Which points, the command


def test_points_final_frontier_and_all_and_a_missing_file_is_reported(store_root):
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    front = sorted(front_steps(store.read_run(run_id), "validation"))  # the run selects on validation
    assert [p.step for p in plan_points(store, "all")[0]] == [0, 20, 40, 60]
    assert [p.step for p in plan_points(store, "final")[0]] == [60]
    assert [p.step for p in plan_points(store, "frontier")[0]] == front
    Path(store.checkpoint_path(run_id, front[0])).unlink()
    points, notes = plan_points(store, "frontier")
    assert [p.step for p in points] == front[1:]
    assert any(f"step {front[0]} is on its validation frontier but has no kept weights file" in n for n in notes), notes
    with pytest.raises(AttackError, match="--runs 'nope-\\*' matches no run"):
        plan_points(store, "all", runs="nope-*")


def test_cli_attacks_the_frontier_prints_the_cost_and_analysis_sees_the_columns(store_root, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # in this process
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    front = sorted(front_steps(store.read_run(run_id), "validation"))  # the run selects on validation
    code = main(["attack", store_root, "--attack", "pgd", "--on", "frontier", "--eps", "4/255,2/255",
                 "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{len(front)} point(s) of 1 run(s) (--on frontier)" in out
    assert f"cost, run {run_id}: {len(front)} point(s), {len(front) * 2 * PGD_IMAGES} image attacks" in out
    assert "forward-backward and" in out and "cost, total:" in out
    assert f"results: {sidecar_path(store.path, run_id)}" in out
    table = store.read()
    attacked = [r for r in table.to_pylist() if r["step"] in front]
    assert all(r["pgd_rerun_adv_acc/4/255"] == r["pgd_adv_acc"] for r in attacked)
    assert all(r["pgd_rerun_adv_acc/2/255"] == r["pgd_adv_acc/2/255"] for r in attacked)
    assert all(r["pgd_rerun_images"] == PGD_IMAGES for r in attacked)
    assert all(r["pgd_rerun_adv_acc/4/255"] is None for r in table.to_pylist() if r["step"] not in front)
    sidecar = pq.read_table(sidecar_path(store.path, run_id))
    assert sidecar.column("step").to_pylist() == front
    # the per-image verdicts, keyed like training's (run, step, metric), pair with training's image by image
    verdicts, own = store.read_verdicts(run_id, ATTACK_VERDICTS_DIR), store.read_verdicts(run_id)
    assert f"results: {verdicts_path(store.path, run_id, ATTACK_VERDICTS_DIR)}" in out
    assert sorted(verdicts.points) == front
    assert verdicts.subset_of("pgd_rerun_adv_acc/4/255").fingerprint == own.subset_of("pgd_adv_acc").fingerprint
    for step in front:  # the same attack on the same images: the same verdict on every image
        assert np.array_equal(verdicts.points[step]["pgd_rerun_adv_acc/4/255"], own.points[step]["pgd_adv_acc"])
        assert np.array_equal(verdicts.points[step]["pgd_rerun_adv_acc/2/255"], own.points[step]["pgd_adv_acc/2/255"])
    assert f"{ATTACK_VERDICTS_DIR}/{run_id}.parquet" in store.derived_files(run_id)["attacks"]  # goes with the run


def test_cli_refuses_bad_input_with_exit_2(store_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    printed = []

    def refused(*argv) -> str:
        assert main(["attack", *argv]) == 2
        out, err = capsys.readouterr()
        printed.append(out)
        return cli_error(err)

    assert "unknown attack 'cw'" in refused(store_root, "--attack", "pgd,cw")
    assert "--eps takes a number or a fraction" in refused(store_root, "--attack", "pgd", "--eps", "two")
    assert "--eps must be in (0, 1]" in refused(store_root, "--attack", "pgd", "--eps", "0")
    assert "matches no run" in refused(store_root, "--attack", "pgd", "--runs", "nope")
    # A store whose runs kept no weights: nothing to attack, and the run is named.
    run_id = only_run(store_root)
    ResultStore(tmp_path / "bare").write_run(run_id, ResultStore(store_root).read_run(run_id))
    message = refused(str(tmp_path / "bare"), "--attack", "autoattack")
    assert "nothing to attack" in message and "keep_checkpoints" in message
    assert f"note: run {run_id}: no kept weights" in printed[-1]
    assert f"result store {tmp_path / 'empty'} does not exist" in refused(str(tmp_path / "empty"), "--attack", "pgd")
    # A cluster address nobody answers at: said at once (ray.init would retry for minutes), nothing written.
    message = refused(store_root, "--attack", "pgd", "--address", "127.0.0.1:1")
    assert "cannot connect to the Ray cluster at 127.0.0.1:1" in message
    assert not (Path(store_root) / "attacks").exists()


# ---------------------------------------------------------------------------------------------------
# Slow: the reference budget, Ray


@pytest.mark.slow
def test_reference_autoattack_on_a_kept_point(store_root):
    store = ResultStore(store_root)
    run_id = only_run(store_root)
    step, path = max(store.checkpoints(run_id).items())
    result = attack_point(store_root, run_id, step, path, ["apgd-ce", "autoattack", "pgd"], None, "cpu")
    robust = {name: result.robust[accuracy_column(name, 4 / 255)] for name in ("apgd-ce", "autoattack", "pgd")}
    assert robust["autoattack"] <= robust["apgd-ce"] <= result.clean_correct
    assert robust["autoattack"] <= robust["pgd"]  # no weaker than the run's own 3-step PGD here


@pytest.mark.slow
def test_on_ray_one_task_per_point_gives_what_this_process_gives(store_root, tmp_path):
    import ray

    twin = str(tmp_path / "twin")
    shutil.copytree(store_root, twin)
    local = run_attacks(twin, ["pgd", "apgd-ce"], on="all", device="cpu", budget=SMALL, log=lambda _: None)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        remote = run_attacks(store_root, ["pgd", "apgd-ce"], on="all", device="cpu", on_ray=True, budget=SMALL,
                             log=lambda _: None)
    finally:
        ray.shutdown()
    assert remote.failures == [] and len(remote.results) == 4
    by_step = {r.step: r.columns for r in local.results}
    for result in remote.results:
        measured = {k: v for k, v in result.columns.items() if "_adv_acc/" in k}
        assert measured == {k: v for k, v in by_step[result.step].items() if "_adv_acc/" in k}
    run_id = only_run(store_root)
    assert read_sidecar(ResultStore(store_root).fs, sidecar_path(ResultStore(store_root).path, run_id)).num_rows == 4


@pytest.mark.parametrize("name", ["apgd-ce", "square"])
def test_verdict_follows_the_runs_pgd_verdict_rule(name):
    """The gradient-masking flag subtracts an attack's accuracy from PGD's, so both use the run's verdict rule:
    any_iterate counts only clean-correct images; final_iterate attacks every image and judges its last one,
    as PGD's final iterate may be right on an image the model gets wrong clean."""
    from rft_ray.attack.suite import robust_under
    from rft_ray.config import RunSpec
    from rft_ray.evaluation.robustness import EvalSet

    class Constant(torch.nn.Module):  # always class 0: no attack can change its answer
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))  # torchattacks reads the device here

        def forward(self, x):
            return self.bias.expand(len(x), 3) + 0 * x.flatten(1).sum(1, keepdim=True)

    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    attacked = EvalSet(images, torch.tensor([0, 1, 0, 2, 0, 1]))
    said_wrong = torch.zeros(6, dtype=torch.bool)  # a clean verdict of "all wrong", to tell the rules apart
    verdicts = {}
    for rule in ("any_iterate", "final_iterate"):
        spec = RunSpec.from_dict({"evaluation": {"pgd": {"verdict": rule}}})
        verdicts[rule] = robust_under(name, PassCounter(Constant()).eval(), attacked, said_wrong, 4 / 255, spec, 3,
                                      torch.device("cpu"), SMALL)
    assert not verdicts["any_iterate"].any()
    assert verdicts["final_iterate"].tolist() == [True, False, True, False, True, False]


def test_attack_sets_torch_threads_and_restores_them(monkeypatch):
    import rft_ray.attack.point as point

    seen = []
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(point, "_attack_point", lambda *a: seen.append(torch.get_num_threads()) or point.PointResult(
        "r", 0, {}, 0, 0))
    before = torch.get_num_threads()
    result = point.attack_point("store", "r", 0, "path", ["pgd"], None, "cpu")
    assert seen == [1] and result.threads == 1  # Ray's share for a task (OMP_NUM_THREADS), and reported
    assert torch.get_num_threads() == before
    monkeypatch.delenv("OMP_NUM_THREADS")
    point.attack_point("store", "r", 0, "path", ["pgd"], None, "cpu")
    assert seen[-1] == len(__import__("os").sched_getaffinity(0))
