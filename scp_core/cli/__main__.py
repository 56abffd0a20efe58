"""``python -m scp_core.cli`` (and ``accelerate launch -m scp_core.cli``): the ``scpdiff`` command."""
import sys

from . import main

sys.exit(main())
