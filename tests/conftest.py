"""Test-suite configuration: the `slow` marker (tests over ~30 s on a 2-core CPU machine).

`pytest -m "not slow"` is the fast local loop; the full suite runs them all.
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on a 2-core CPU; deselect with -m 'not slow'")
