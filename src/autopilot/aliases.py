"""The names of the registry aliases autopilot moves: the one definition, imported wherever an alias is named.

`champion` is the version that serves (promotion moves it, rollback moves it back); `challenger`
the newest version the gates passed, until it is promoted or a later one replaces it.
"""

from __future__ import annotations

__all__ = ["CHALLENGER", "CHAMPION"]

CHAMPION = "champion"
CHALLENGER = "challenger"
