"""`rft checkpoints STORE`: the kept weights of evaluation points (`output.keep_checkpoints`) with the metrics their
files name, read from each file's header only (`rft_ray.results.checkpoints.list_checkpoints`)."""
from __future__ import annotations

import argparse
import fnmatch
import json


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from rft_ray.results.checkpoints import describe_checkpoints, list_checkpoints
    from rft_ray.results.store import ResultStore

    store = ResultStore(args.store).must_exist()
    kept = [c for c in list_checkpoints(store) if fnmatch.fnmatchcase(c.run_id, args.runs or "*")]
    bad = [c for c in kept if c.problem]
    if args.json:
        print(json.dumps([{"run_id": c.run_id, "step": c.step, "size_bytes": c.size_bytes,
                           "test_clean_acc": c.test_clean_acc, "pgd_adv_acc": c.pgd_adv_acc,
                           "front": c.front, "strategy": c.strategy, "path": c.path, "problem": c.problem}
                          for c in kept], indent=1))
    elif kept:
        print(describe_checkpoints(kept))
        print(f"{len(kept)} kept checkpoint(s) of {len({c.run_id for c in kept})} run(s); clean and PGD as each run "
              "measured the point (test); 'val front' or 'test front': the split whose clean-vs-PGD front the run kept "
              "(search.select_on)" + (f"; {len(bad)} of {len(kept)} kept checkpoint file(s) are bad (damaged, or not "
                                      "rft-ray weights): rft attack and rft interpolate leave them out" if bad else ""))
    else:
        runs = f" of runs matching {args.runs!r}" if args.runs else ""
        print(f"no kept checkpoints{runs} in {store.root} (runs keep them with output.keep_checkpoints: frontier "
              "or all)")
    return 1 if bad else 0


def add_checkpoints_command(sub) -> None:
    p = sub.add_parser("checkpoints", help="list the kept checkpoints of a result store with their metrics",
                       description="One line per kept weights file (<store>/checkpoints/<run_id>/step-<step>"
                       ".safetensors): run, step, clean and PGD accuracy as the run measured the point (from the "
                       "file's header; no tensor is read), the split whose clean-vs-PGD front the run kept (val "
                       "front: its selections read validation; test front: they read test, or it measured no "
                       "validation), size and path; a file whose size is not what its header "
                       "describes (cut short), or that is not rft-ray's, is listed as BAD with the reason, and the "
                       "command exits 1. `rft attack` and `rft interpolate` work on the good files.")
    p.add_argument("store", metavar="STORE", help="result store: a local folder or a URI (s3://..., gs://...)")
    p.add_argument("--runs", metavar="GLOB", help="only runs whose id matches this glob, e.g. 'lora-*'")
    p.add_argument("--json", action="store_true", help="print a JSON list (run_id, step, size_bytes, "
                   "test_clean_acc, pgd_adv_acc, front, strategy, path, problem) instead of lines")
    p.set_defaults(handler=cmd_checkpoints)
