"""``python -m phast``: the ``phast`` command line."""

import sys

from phast.cli import main

sys.exit(main())
