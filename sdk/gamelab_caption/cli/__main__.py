"""``python -m gamelab_caption.cli``, as the ``gamelab-caption`` script."""

import sys

from . import main

sys.exit(main())
