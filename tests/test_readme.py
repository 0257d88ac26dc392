"""The README's examples run and say what the README says they do."""

import os
import re
import subprocess
import sys

import pytest

import smtpd

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


def python_blocks(title):
    """The ```python blocks of the README section headed `## title`."""
    if not os.path.exists(README):
        pytest.skip("README.md is not beside the tests (installed sdist?)")
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text,
                        re.M | re.S)
    assert section, "README has no section %r" % title
    return re.findall(r"```python\n(.*?)```", section.group(1), re.S)


def run_python(code, timeout=60):
    env = dict(os.environ,
               PYTHONPATH=os.path.dirname(os.path.abspath(smtpd.__file__)))
    return subprocess.run([sys.executable, "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=os.path.dirname(README))


def test_capturing_mail_example_runs():
    [example] = python_blocks("Capturing mail in a test suite")
    # The example ends with its own assert on the captured message.
    result = run_python(example + "\nprint('captured', len(server.messages))")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "captured 1\n"
    assert result.stderr == ""


def test_quick_start_output_is_what_debuggingserver_prints():
    """The printout shown under Quick start is what DebuggingServer prints
    for the Quick start client (run against an in-process server)."""
    [client] = python_blocks("Quick start")
    with open(README, encoding="utf-8") as f:
        shown = re.search(r"```text\n(.*?)```", f.read(), re.S).group(1)
    code = client.replace('"127.0.0.1", 1025', '"127.0.0.1", PORT')
    script = (
        "import asyncore, smtpd, threading, socket\n"
        "server = smtpd.DebuggingServer(('127.0.0.1', 0), None)\n"
        "PORT = server.socket.getsockname()[1]\n"
        "loop = threading.Thread(target=asyncore.loop,"
        " kwargs={'timeout': 0.05})\n"
        "loop.start()\n"
        "try:\n"
        + "".join("    " + line + "\n" for line in code.splitlines()) +
        "finally:\n"
        "    asyncore.close_all()\n"
        "    loop.join(10)\n")
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == shown
