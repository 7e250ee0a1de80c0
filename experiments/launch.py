"""Entry script for `ray submit`: runs a sweep on the Ray cluster this script is submitted to.

    ray submit --tmux cluster.yaml experiments/launch.py -- experiments/paper.yaml [--resume] [--set key=value ...]

`ray submit` copies this file to the head node and runs it there; it connects to the running cluster
(`ray.init(address="auto")`, or RAY_ADDRESS) and hands its arguments to `rft sweep`. A relative spec
path that does not exist in the current folder is looked up in the project's copy on the node
(RFT_REPO, default ~/rft-ray, where cluster.yaml's file_mounts put it). With s3:// / gs:// storage the sweep's
local files (optuna.db, mlflow.db, the summary; copied to the bucket after every trial) go to RFT_RESULTS_DIR/<name>,
default ~/results/<name>: not the current folder, which under `ray job submit --working-dir` is Ray's temporary
package folder.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_spec(argv: list[str]) -> list[str]:
    repo = Path(os.environ.get("RFT_REPO", "~/rft-ray")).expanduser()
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.endswith((".yaml", ".yml")) and not Path(arg).is_file() and (repo / arg).is_file():
            out[i] = str(repo / arg)
            break
    return out


def main(argv: list[str]) -> int:
    import ray

    from rft_ray.cli import main as rft

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    os.environ.setdefault("RFT_RESULTS_DIR", str(Path.home() / "results"))
    ray.init(address="auto")  # the cluster this script was submitted to (RAY_ADDRESS wins when set)
    try:
        return rft(["sweep", *resolve_spec(argv)])
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
