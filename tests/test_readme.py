"""The README's examples run and say what the README says they do."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

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


def smtpd_env():
    """The environment for a subprocess that must import the smtpd under test.

    Run it in a directory without smtpd.py, too: ``-c`` and ``-m`` put the
    working directory first on sys.path.
    """
    return dict(os.environ,
                PYTHONPATH=os.path.dirname(os.path.abspath(smtpd.__file__)))


def run_python(code, cwd, timeout=60):
    return subprocess.run([sys.executable, "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=timeout,
                          env=smtpd_env(), cwd=cwd)


def test_capturing_mail_example_runs(tmp_path):
    [example] = python_blocks("Capturing mail in a test suite")
    # The example ends with its own assert on the captured message.
    result = run_python(example + "\nprint('captured', len(server.messages))",
                        tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "captured 1\n"
    assert result.stderr == ""


def quick_start_command():
    """The Quick start's ``python -m smtpd ...`` command line, split."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.search(r"^python -m smtpd .*$", text, re.M).group().split()[1:]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_quick_start_output_is_what_the_command_prints(tmp_path):
    """The printout shown under Quick start is what the Quick start command
    (the CLI, in a subprocess) prints for the Quick start client."""
    [client] = python_blocks("Quick start")
    with open(README, encoding="utf-8") as f:
        shown = re.search(r"```text\n(.*?)```", f.read(), re.S).group(1)
    argv = quick_start_command()
    assert argv[-1] == "127.0.0.1:1025" and '"127.0.0.1", 1025' in client
    port = free_port()
    argv[-1] = "127.0.0.1:%d" % port
    server = subprocess.Popen([sys.executable] + argv, env=smtpd_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.05)
        result = run_python(client.replace("1025", str(port)), tmp_path)
        assert result.returncode == 0, result.stderr
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert (server.returncode, err) == (0, "")
    assert out == shown
