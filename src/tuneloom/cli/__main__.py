"""`python -m tuneloom.cli` — the same as the `tuneloom` command."""

import sys

from tuneloom.cli import main

sys.exit(main())
