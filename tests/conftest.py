"""Shared fixtures: a local module universe, running servers, and the real go command."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["support.fixtures"]
