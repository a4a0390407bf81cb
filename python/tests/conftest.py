# SPDX-License-Identifier: MIT
"""Shared set-up for the tests of the `attention` module (references: reference.py).

ctest sets ATTENTION_EXPECT_MODULE_DIR to the directory the module under test must come from (the
CMake build, or the pip-installed virtual environment), so that a copy installed elsewhere cannot
be tested by mistake.
"""
import os

import pytest

import attention


def pytest_report_header(config):
    return f"attention {attention.__version__} from {attention.__file__}"


@pytest.fixture(scope="session", autouse=True)
def module_under_test():
    expected = os.environ.get("ATTENTION_EXPECT_MODULE_DIR")
    if expected:
        found = os.path.realpath(attention.__file__)
        assert found.startswith(os.path.realpath(expected) + os.sep), (
            f"attention imported from {found}, not from {expected}")
