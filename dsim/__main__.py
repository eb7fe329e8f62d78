"""``python -m dsim``: the same as the ``dsim`` command."""

import sys

from .cli import main

sys.exit(main())
