"""Shared pytest set-up: name the smtpd under test, and insist on the installed one;
let the CLIs the tests start be stopped with SIGINT.

tox installs the package and runs the tests from a scratch directory; it sets
PYSMTPD_REQUIRE_INSTALLED=1 so that a run which silently picked up the
checkout's smtpd.py (through the rootdir or the current directory on sys.path)
stops at once instead of testing the wrong file.
"""

import os
import signal
import sysconfig

import pytest

import smtpd

# The tests stop the CLI as a user does, with Ctrl-C (SIGINT).  A process
# started by one that ignores SIGINT (a background job, some CI runners)
# starts with it ignored, and so would its children; a handled signal is
# reset to the default by exec, so handling it here gives them the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _smtpd_dir():
    return os.path.dirname(os.path.realpath(smtpd.__file__))


def pytest_report_header(config):
    return f"smtpd under test: {os.path.realpath(smtpd.__file__)}"


def pytest_sessionstart(session):
    if os.environ.get("PYSMTPD_REQUIRE_INSTALLED") != "1":
        return
    site_packages = os.path.realpath(sysconfig.get_paths()["purelib"])
    if _smtpd_dir() != site_packages:
        raise pytest.UsageError(
            f"PYSMTPD_REQUIRE_INSTALLED=1 but smtpd was imported from "
            f"{smtpd.__file__}, not from this environment's {site_packages}")
