"""Chorus chaos suite: fault schedules (nemeses), an XMPP workload, and
checkers for the promises of DESIGN.md, run against a real three-site
cluster built with the end-to-end harness in ``tests/e2e`` (imported, not
copied: this module puts that directory on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

CHAOS_DIR = Path(__file__).resolve().parents[1]
REPO = CHAOS_DIR.parent
E2E_DIR = REPO / "tests" / "e2e"
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))
