"""``python -m autotransfer.cli``."""

import sys

from .main import main

sys.exit(main())
