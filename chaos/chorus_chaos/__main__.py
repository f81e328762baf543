"""``python -m chorus_chaos``: the chorus-chaos command line (see cli.py)."""

from __future__ import annotations

import sys

from chorus_chaos.cli import main

if __name__ == "__main__":
    sys.exit(main())
