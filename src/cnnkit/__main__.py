"""``python -m cnnkit`` (and ``torchrun … -m cnnkit``): the ``cnnkit`` command line."""

import sys

from cnnkit.cli import main

sys.exit(main())
