"""`python -m autopilot.cli ...`: the `autopilot` command (how the demo and SageMaker start `serve`)."""

import sys

from autopilot.cli import main

sys.exit(main())
