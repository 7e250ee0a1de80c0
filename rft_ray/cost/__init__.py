"""What a study costs: counts from the schedule, per-image costs from the engine's own steps."""
