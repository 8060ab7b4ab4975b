"""``python -m gamelab_caption``, as the ``gamelab-caption`` script (for when pip's scripts
folder is not on PATH)."""

import sys

from .cli import main

sys.exit(main())
