"""``python -m dsim.verify``: the dsim-verify command."""

import sys

from .cli import main

sys.exit(main())
