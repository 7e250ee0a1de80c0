from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _two_threads():
    # The CI machine has two cores; more threads only contend.
    torch.set_num_threads(2)


def tiny_run(tmp_path: Path, **overrides) -> dict:
    """A run spec dict that trains in a few seconds: random-init small ViT on 16px digits."""
    spec = {
        "model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 16},
        "strategy": {"name": "lora"},
        "dataset": {"name": "digits", "corruptions": ["contrast", "gaussian_noise"]},
        "training": {"steps": 60, "batch_size": 16, "lr": 3e-3, "seed": 0},
        "evaluation": {"schedule": [{"until": None, "every": 20}], "train_examples": 40, "test_examples": 40,
                       "ood_examples": 20, "batch_size": 64, "pgd": {"eps": "4/255", "alpha": "1/255", "steps": 3},
                       "validation": {"examples": 40, "pgd_examples": 20}},
        "output": {"results": str(tmp_path / "store"), "checkpoints": str(tmp_path / "ckpt")},
    }
    from rft_ray.config import apply_overrides

    return apply_overrides(spec, overrides)


def cli_error(err: str) -> str:
    """What `rft` wrote to stderr for bad input: exactly one `rft: error: ...` paragraph (`rft analyze: error:`
    for analyze), with no traceback, no second error and nothing else. Returns the message after the prefix."""
    prefix = next((p for p in ("rft: error: ", "rft analyze: error: ") if err.startswith(p)), None)
    assert prefix and err.count(prefix.rstrip()) == 1, err
    assert err.endswith("\n") and "\n\n" not in err and "Traceback (most recent call last)" not in err, err
    return err[len(prefix):]


def rendezvous_file(folder) -> str:
    """A path for a gloo group's rendezvous (torch's FileStore) in `folder`: no TCP port is picked in advance, so
    no other process on the machine can take it between the pick and the bind."""
    import tempfile

    return str(Path(tempfile.mkdtemp(prefix="gloo-", dir=folder)) / "store")


@contextmanager
def gloo_group(rank: int, world: int, rendezvous: str):
    """This spawned process as worker `rank` of a gloo process group of `world` meeting at the file `rendezvous`
    (`rendezvous_file`; Ray Train sets up a trial's workers with a TCP store instead: how they meet does not change
    what they compute), one torch thread each; the group is destroyed after."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextmanager
def two_node_cluster():
    """A local Ray cluster of a head and one added node, 1 CPU each, no dashboard (this process's own Ray, if
    any, is shut down first); yields (cluster, the added node) and shuts the cluster down after."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()
