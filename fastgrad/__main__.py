"""``python -m fastgrad``: the fastgrad command."""

import sys

from .cli import main

sys.exit(main())
