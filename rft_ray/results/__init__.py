"""Results: the one record an evaluation point produces, the Parquet store, and the filesystem helpers
(URI to filesystem, atomic writes) every writer of the platform uses. Imports config only."""
