"""`python -m dtconnector`: the same command as the `dtconnector` script."""

import sys

from .cli import main

sys.exit(main())
