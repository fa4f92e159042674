"""`python -m autopilot.cli`: the same as the `autopilot` command."""

import sys

from autopilot.cli import main

sys.exit(main())
