"""How the server sizes its connection and fetch budgets from the file-descriptor limit."""

from __future__ import annotations

from entrepot.web.server import connection_budget, fetch_budget


def test_connections_get_at_most_a_quarter_of_the_fds() -> None:
    """A connection serving a zip holds its socket and the file: at half the fds, 127 slow
    readers took all 256 and the worker went silent below its cap (hostile review)."""
    assert connection_budget(2000, fds=256) == 64
    assert connection_budget(2000, fds=1 << 20) == 2000
    assert connection_budget(2000, fds=4096) == 1024
    assert connection_budget(2000, fds=4) == 8  # never below a handful


def test_fetches_get_at_most_a_twelfth_of_the_fds() -> None:
    assert fetch_budget(512, fds=256) == 21
    assert fetch_budget(512, fds=1 << 20) == 512
    assert fetch_budget(512, fds=10) == 4
