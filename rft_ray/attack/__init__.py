"""`rft attack`: stronger attacks (AutoAttack and its parts, torchattacks 3.3.0) and PGD again, on the kept
weights of evaluation points, on the same seeded, stratified images the run's PGD attacked; results go beside
the runs in the store (`rft_ray.results.attacks`). `suite`: the attacks and the pass counter; `point`: one
checkpoint, start to end; `runner`: which points, in this process or on Ray, writing, the cost."""
