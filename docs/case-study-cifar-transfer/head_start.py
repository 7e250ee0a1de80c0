"""Step 0 of the case study with the two heads a run could start from: the seeded fresh head every run starts
from since commit bd05e08 (the third run), and the embedded CIFAR-10 model's own trained 10-class head, which
the first two runs reused on these 10 CIFAR-100 classes (model.keep_head: true gives it back).

    PYTHONPATH=<checkout at bd05e08 or later> python head_start.py experiment.json <data root> > head_start.json

Every strategy starts as the backbone plus the head (adapters, LoRA, IA3 and Compacter are the identity at
step 0), so one model per head stands for all 28 runs' step 0: the evaluator's own point (test clean, PGD at
1/255 and 2/255 on the seeded stratified 200, validation, OOD), with the run's subsets and seeds.
"""
import json
import sys

import torch

from rft_ray.evaluation.evaluator import EvalSets, evaluate
from rft_ray.specs import run_spec
from rft_ray.training.setup import Run

experiment = json.load(open(sys.argv[1]))
base = experiment["base"]
base["dataset"]["root"] = sys.argv[2]
rows = {}
for head, keep in (("fresh", False), ("embedded_cifar10", True)):
    spec = run_spec({**base, "model": {**base["model"], "keep_head": keep}, "strategy": {"name": "linear"}})
    run = Run.build(spec)
    sets = EvalSets.from_bundle(run.bundle, spec)
    point = evaluate(run.model, sets, spec, torch.device("cpu"), None)
    rows[head] = {k: v for k, v in point.items() if isinstance(v, (int, float, dict))}
print(json.dumps(rows, indent=1))
