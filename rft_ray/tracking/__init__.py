"""MLflow, in one package: naming, tags and params (`naming`), the guarded client (`client`), the live
Tune callback (`callback`), the back-fill from the result store (`backfill`) and the trials' kept weights
from the result store to MLflow artifacts (`artifacts`)."""
