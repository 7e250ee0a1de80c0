"""`python -m rft_ray.cli`: the `rft` command."""
import sys

from rft_ray.cli import main

sys.exit(main())
