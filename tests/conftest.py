"""Test options: a --runslow flag for long checks (the environment is set by the root conftest.py)."""
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run slow checks (the full toy reproduction against the committed tables)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (python3 bootstrap.py test --runslow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
