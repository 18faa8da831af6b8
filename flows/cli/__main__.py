"""``python -m flows.cli``: the ``denoiser`` command."""

import sys

from flows.cli import main

sys.exit(main())
