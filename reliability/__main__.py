import sys

from .run_load import main

sys.exit(main())
