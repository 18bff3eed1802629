"""``python -m hodr`` is the ``hodr`` command."""

import sys

from hodr.cli import main

sys.exit(main())
