"""The fine-tuning strategies, in a registry: the paper's seven, then LP-FT. Build with
`create_strategy(name, options)`."""
from rft_ray.config.strategy_options import PAPER_STRATEGIES
from rft_ray.models.strategies.base import (
    ParameterCount,
    Phase,
    Strategy,
    apply_strategy,
    config_help,
    count_parameters,
    create_strategy,
    register_strategy,
    strategy_config,
    strategy_names,
)
from rft_ray.models.strategies import builtin as _builtin  # noqa: F401  (registers the seven)
from rft_ray.models.strategies import lp_ft as _lp_ft  # noqa: F401  (registers lp_ft, after them)

__all__ = ["PAPER_STRATEGIES", "ParameterCount", "Phase", "Strategy", "apply_strategy", "config_help",
           "count_parameters", "create_strategy", "register_strategy", "strategy_config",
           "strategy_names"]
