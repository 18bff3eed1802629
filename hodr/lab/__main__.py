"""``python -m hodr.lab ...`` is ``hodr lab ...``; ``_power <state dir>`` runs the power controller.

The controller is started through here rather than ``-m hodr.lab.power`` because the package
imports ``power`` itself, which would make runpy warn about a module executed twice.
"""

import sys

from hodr.lab import cli, power

if sys.argv[1:2] == ["_power"]:
    sys.exit(power.main(sys.argv[2:]))
sys.exit(cli.main(prog="python -m hodr.lab"))
