"""``python -m raynas.cli``."""

import sys

from raynas.cli.main import main

sys.exit(main())
