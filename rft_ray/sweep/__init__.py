"""The sweep: Ray Tune searches over strategy x dataset groups, each trial a Ray Train run of the loop."""
