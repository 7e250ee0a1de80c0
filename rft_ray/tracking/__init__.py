"""MLflow, in one package: naming, tags and params (`naming`), the guarded client (`client`), the live
Tune callback (`callback`) and the back-fill from the result store (`backfill`)."""
