"""The seven fine-tuning strategies of the paper, in a registry. Build with `create_strategy(name, options)`."""
from rft_ray.models.strategies.base import (
    ParameterCount,
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

__all__ = ["ParameterCount", "Strategy", "apply_strategy", "config_help", "count_parameters", "create_strategy",
           "register_strategy", "strategy_config", "strategy_names"]
