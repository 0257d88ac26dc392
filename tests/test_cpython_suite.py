"""The conformance gate: CPython 3.11's own test_smtpd.py, run against our smtpd.

CPython dropped smtpd (and its tests) in 3.12.  pysmtpd promises 3.11's
behaviour, so the strongest check there is, is 3.11's own test file, byte for
byte unmodified, passing in full on the running interpreter with our module:

* the file is found on this machine (a Python 3.11 installation; set
  PYSMTPD_CPYTHON311_TEST to its path to choose one by hand), copied into a
  scratch directory and checked to be identical to its source (sha256);
* it runs as ``python -m unittest -v test_smtpd`` in a subprocess of the
  running interpreter, so ``test.support`` and ``test.mock_socket`` come
  from the running interpreter's own ``test`` package, and the directory of
  the smtpd imported here comes first on PYTHONPATH;
* a second, tiny subprocess with the same environment proves that the suite
  imports that very smtpd (and not 3.11's, nor another copy);
* exactly EXPECTED_TESTS tests must run, with no failure, error, skip,
  expected failure or unexpected success.

Without a 3.11 test file the test is skipped, unless the environment variable
CI is set: CI must never pass by not looking.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import smtpd

# Tests in Lib/test/test_smtpd.py of CPython 3.11 (checked with 3.11.7).
EXPECTED_TESTS = 153
SUITE_TIMEOUT = 300   # seconds; the suite itself takes well under one
PROBE_TIMEOUT = 60

# Where a 3.11 installation keeps its test package when no python3.11
# command answers: pyenv, Debian's libpython3.11-testsuite, a source build,
# and the project's own get-python.sh root.
CANDIDATE_GLOBS = [
    os.path.join(os.environ.get("PYENV_ROOT", "~/.pyenv"),
                 "versions/3.11*/lib/python3.11/test/test_smtpd.py"),
    "~/.pyenv/versions/3.11*/lib/python3.11/test/test_smtpd.py",
    "/usr/lib/python3.11/test/test_smtpd.py",
    "/usr/local/lib/python3.11/test/test_smtpd.py",
    "/opt/pysmtpd-pythons/3.11/usr/lib/python3.11/test/test_smtpd.py",
]


def _ask_python311():
    """Return test_smtpd.py of the `python3.11` command's own test package, or None."""
    exe = shutil.which("python3.11")
    if exe is None:
        return None
    # -I: neither PYTHONPATH nor the current directory may stand in for
    # the real test package.
    probe = "import os, test; print(os.path.dirname(test.__file__))"
    try:
        proc = subprocess.run([exe, "-I", "-c", probe], capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    path = os.path.join(proc.stdout.strip(), "test_smtpd.py")
    return path if os.path.isfile(path) else None


def find_cpython311_test_file():
    """Locate CPython 3.11's Lib/test/test_smtpd.py on this machine, or None."""
    chosen = os.environ.get("PYSMTPD_CPYTHON311_TEST")
    if chosen:
        if not os.path.isfile(chosen):
            pytest.fail(f"PYSMTPD_CPYTHON311_TEST={chosen!r} is not a file")
        return chosen
    found = _ask_python311()
    if found:
        return found
    for pattern in CANDIDATE_GLOBS:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if matches:
            return matches[-1]
    return None


def _skip_or_fail(reason):
    # On CI a missing prerequisite is a failure: the gate must really run.
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def parse_unittest_output(output):
    """Read the closing summary of a unittest run.

    Returns (tests_ran, status, details) where status is "OK" or "FAILED"
    and details maps each count in the parentheses ("failures", "errors",
    "skipped", "expected failures", "unexpected successes") to an int.
    Raises ValueError when the output has no complete summary.
    """
    ran = list(re.finditer(r"^Ran (\d+) tests? in [\d.]+s$", output, re.MULTILINE))
    if not ran:
        raise ValueError("no 'Ran N tests' line")
    tail = output[ran[-1].end():]
    summary = re.search(r"^(OK|FAILED|NO TESTS RAN)(?: \((.*)\))?$", tail, re.MULTILINE)
    if summary is None:
        raise ValueError("no OK/FAILED line after 'Ran N tests'")
    details = {}
    if summary.group(2):
        for item in summary.group(2).split(", "):
            name, _, count = item.rpartition("=")
            details[name] = int(count)
    return int(ran[-1].group(1)), summary.group(1), details


def test_parse_unittest_output():
    """The summary parser reads every shape unittest prints."""
    good = "x ... ok\n\n" + "-" * 70 + "\nRan 153 tests in 0.022s\n\nOK\n"
    assert parse_unittest_output(good) == (153, "OK", {})
    mixed = ("Ran 1 test in 0.001s\n\nFAILED (failures=2, errors=1, skipped=3,"
             " expected failures=4, unexpected successes=5)\n")
    assert parse_unittest_output(mixed) == (1, "FAILED", {
        "failures": 2, "errors": 1, "skipped": 3,
        "expected failures": 4, "unexpected successes": 5})
    assert parse_unittest_output("Ran 7 tests in 1.5s\n\nOK (skipped=2)\n") == (
        7, "OK", {"skipped": 2})
    with pytest.raises(ValueError):
        parse_unittest_output("Traceback (most recent call last):\n")
    with pytest.raises(ValueError):
        parse_unittest_output("Ran 3 tests in 0.1s\n")


@pytest.fixture
def suite_dir(tmp_path):
    """A scratch directory holding an unmodified copy of 3.11's test_smtpd.py."""
    source = find_cpython311_test_file()
    if source is None:
        _skip_or_fail("CPython 3.11's Lib/test/test_smtpd.py was not found on this "
                      "machine (install Python 3.11 with its test package, or set "
                      "PYSMTPD_CPYTHON311_TEST)")
    copy = tmp_path / "test_smtpd.py"
    shutil.copyfile(source, copy)
    assert _sha256(copy) == _sha256(source), f"copy of {source} differs from it"
    return tmp_path


def _suite_env():
    """The environment for the suite: our smtpd's directory first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(smtpd.__file__))
    # With PYTHONSAFEPATH, -m would not find test_smtpd in the current directory.
    env.pop("PYTHONSAFEPATH", None)
    return env


def test_running_interpreter_has_its_test_package():
    """test.support and test.mock_socket, which the suite needs, import here."""
    probe = ("from test import support, mock_socket; "
             "from test.support import socket_helper, warnings_helper; "
             "print(mock_socket.__file__)")
    proc = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                          text=True, timeout=PROBE_TIMEOUT)
    if proc.returncode != 0:
        _skip_or_fail(f"{sys.executable} has no usable CPython 'test' package:\n"
                      f"{proc.stderr}")


def test_suite_imports_our_smtpd(suite_dir):
    """The suite, set up as below, gets this very smtpd and the copied file."""
    probe = ("import json, test_smtpd; print(json.dumps({"
             "'smtpd': test_smtpd.smtpd.__file__, 'test_smtpd': test_smtpd.__file__}))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=suite_dir, env=_suite_env(),
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert os.path.realpath(imported["smtpd"]) == os.path.realpath(smtpd.__file__)
    assert os.path.realpath(imported["test_smtpd"]) == os.path.realpath(
        suite_dir / "test_smtpd.py")


def test_cpython311_suite_passes(suite_dir):
    """All of 3.11's test_smtpd.py passes against our smtpd: nothing skipped."""
    proc = subprocess.run([sys.executable, "-m", "unittest", "-v", "test_smtpd"],
                          cwd=suite_dir, env=_suite_env(), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=SUITE_TIMEOUT)
    output = proc.stdout
    shown = f"\n--- python -m unittest -v test_smtpd (exit {proc.returncode}) ---\n{output}"
    try:
        ran, status, details = parse_unittest_output(output)
    except ValueError as exc:
        pytest.fail(f"unreadable unittest output ({exc}){shown}")
    # Per-test lines name what went wrong, for the failure message.
    bad = re.findall(r"^.*\.\.\. (?:FAIL|ERROR|skipped.*|expected failure"
                     r"|unexpected success)$", output, re.MULTILINE)
    assert (ran, status, details, bad, proc.returncode) == (
        EXPECTED_TESTS, "OK", {}, [], 0), shown
