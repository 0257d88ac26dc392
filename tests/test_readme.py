"""The README's examples run and say what the README says they do."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import smtpd

# tests/test_install.py makes venvs and copies of the checkout.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

import test_install as install  # noqa: E402

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


# -- the commands that start from a clone --------------------------------------------

def sh_blocks(title):
    """The ```sh blocks of the README section headed `## title`, as text."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.M | re.S)
    assert section, "README has no section %r" % title
    return [textwrap.dedent(block).strip()
            for block in re.findall(r"```sh\n(.*?)```", section.group(1), re.S)]


def test_ci_runs_the_readmes_test_command():
    """`bash .ci/run` is the bare-machine command, and it ends by running `tox` as
    the README gives it, with no arguments of its own."""
    tox, ci, unit_tests, *_ = sh_blocks("Running the tests")
    assert (tox, ci) == ("tox", "bash .ci/run")
    assert sh_blocks("Quick start")[-1] == ci
    with open(os.path.join(os.path.dirname(README), ".ci", "run"), encoding="utf-8") as f:
        commands = [line for line in f.read().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == '"$tools/bin/tox"'


@pytest.fixture
def clone(tmp_path):
    """A copy of the checkout, and an environment whose `python3.12` is a fresh
    venv's: a machine that has the clone and Python 3.12, nothing installed."""
    root = install.find_project_root()
    if root is None or not os.path.exists(README):
        pytest.skip("not run from a checkout")
    python312 = sys.executable if sys.version_info[:2] == (3, 12) else shutil.which("python3.12")
    if python312 is None:
        pytest.skip("needs python3.12")
    copy = tmp_path / "pysmtpd"
    shutil.copytree(root, copy, ignore=install._NOT_COPIED)
    venv = tmp_path / "venv"
    install._run([python312, "-m", "venv", str(venv)], install.VENV_TIMEOUT, cwd=tmp_path)
    env = install._clean_env()
    env["PATH"] = str(venv / "bin") + os.pathsep + env["PATH"]
    return copy, env


@pytest.mark.install
def test_unit_test_command_runs_as_written(clone):
    copy, env = clone
    command = sh_blocks("Running the tests")[2]
    assert command.startswith("python3.12 -m pip install . ")
    result = subprocess.run(["bash", "-c", command], cwd=copy, env=env, capture_output=True,
                            text=True, timeout=install.PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"=+ \d+ passed(, \d+ skipped)? in .* =+", summary), summary


@pytest.mark.install
def test_debugging_server_command_runs_as_written(clone):
    """The Quick start's command from a clone installs the checkout and runs the
    server, which prints what the Quick start shows for its client."""
    copy, env = clone
    command = sh_blocks("Quick start")[-2]
    assert command.startswith("bash .ci/get-python.sh 3.12 && ") and "127.0.0.1:1025" in command
    [client] = python_blocks("Quick start")
    with open(README, encoding="utf-8") as f:
        shown = re.search(r"```text\n(.*?)```", f.read(), re.S).group(1)
    port = free_port()
    server = subprocess.Popen(
        ["bash", "-c", command.replace("127.0.0.1:1025", "127.0.0.1:%d" % port)],
        cwd=copy, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        client_smtp = install._connect(server, port, within=install.PIP_TIMEOUT)
        assert client_smtp is not None, server.communicate()
        client_smtp.quit()
        result = run_python(client.replace("1025", str(port)), copy.parent)
        assert result.returncode == 0, result.stderr
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)   # Ctrl-C, to the whole command line
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            out, err = server.communicate()
    assert server.returncode == 0, err
    assert out.startswith("python3.12: ")
    assert out.endswith(shown), out[-1000:]
