"""Install the project with pip into a fresh venv and use it as a user would.

One venv for the module (module-scoped fixtures): the project tree is copied
to a scratch directory (so the build leaves nothing in the checkout), and
``pip install <copy>`` builds and installs it with its dependencies.  Then:

* ``import smtpd`` under ``-W error`` is silent and comes from the venv;
* the distribution ships smtpd.py and the smtpd-stubs package;
* ``python -m smtpd -n -c DebuggingServer 127.0.0.1:PORT`` accepts one
  message from smtplib and prints it.

Marked ``install``: deselect with ``-m "not install"`` for a quick run.
"""

import ast
import configparser
import os
import pathlib
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(sys.version_info < (3, 12),
                       reason="up to 3.11 the standard library's smtpd shadows pysmtpd"),
]

VENV_TIMEOUT = 120
PIP_TIMEOUT = 600
RUN_TIMEOUT = 60
LISTEN_TIMEOUT = 20
SMTP_TIMEOUT = 10

# What never belongs in the copy that pip builds from.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".tox", ".hypothesis", ".pytest_cache", "__pycache__", "*.py[cod]",
    "build", "dist", "*.egg-info", ".venv", "venv")


def project_version():
    """The version setup.cfg gives."""
    config = configparser.ConfigParser()
    config.read(os.path.join(find_project_root(), "setup.cfg"), encoding="utf-8")
    return config.get("metadata", "version")


def find_project_root():
    """The nearest directory above this file that holds pysmtpd's setup.cfg."""
    here = os.path.dirname(os.path.abspath(__file__))
    while True:
        setup_cfg = os.path.join(here, "setup.cfg")
        if os.path.isfile(setup_cfg):
            with open(setup_cfg, encoding="utf-8") as f:
                if any(line.split() == ["name", "=", "pysmtpd"] for line in f):
                    return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _clean_env():
    """The environment for venv commands: nothing that redirects imports."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONWARNINGS",
                 "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(cmd, timeout, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=_clean_env(), **kwargs)
    assert proc.returncode == 0, (
        f"{cmd} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}"
        f"\n--- stderr ---\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def workdir():
    """A scratch directory for this module, removed (venv and all) at its end."""
    with tempfile.TemporaryDirectory(prefix="pysmtpd-install-") as path:
        yield pathlib.Path(path)


@pytest.fixture(scope="module")
def scratch(workdir):
    """An empty working directory: no smtpd.py can be picked up from it."""
    path = workdir / "cwd"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def venv_python(workdir, scratch):
    """The python of a fresh venv into which pip installed the project."""
    root = find_project_root()
    if root is None:
        pytest.skip("no pysmtpd setup.cfg above this test file: not run from the "
                    "checkout or sdist")
    source = workdir / "pysmtpd-src"
    shutil.copytree(root, source, ignore=_NOT_COPIED)
    env_dir = workdir / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)], VENV_TIMEOUT, cwd=scratch)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(source)], PIP_TIMEOUT,
         cwd=scratch)
    return str(python)


def test_import_is_silent_and_from_the_venv(venv_python, scratch):
    """`import smtpd` warns about nothing, even under -W error, and is the installed copy."""
    proc = _run([venv_python, "-W", "error", "-c",
                 "import smtpd, sys; print(smtpd.__file__); print(sys.prefix)"],
                RUN_TIMEOUT, cwd=scratch)
    assert proc.stderr == ""
    module_file, prefix = proc.stdout.splitlines()
    venv_dir = os.path.dirname(os.path.dirname(venv_python))
    assert os.path.realpath(prefix) == os.path.realpath(venv_dir)
    assert os.path.realpath(module_file).startswith(os.path.realpath(venv_dir) + os.sep)
    assert "site-packages" in module_file.split(os.sep)


def test_distribution_contents(venv_python, scratch):
    """pysmtpd installs smtpd.py, the stub package and its dependencies."""
    probe = ("import importlib.metadata as m; d = m.distribution('pysmtpd'); "
             "print(d.version); print(sorted(str(f) for f in d.files if "
             "not str(f).startswith(('pysmtpd-', '__pycache__')))); "
             "print(sorted(r.split(';')[0].strip() for r in d.requires))")
    proc = _run([venv_python, "-c", probe], RUN_TIMEOUT, cwd=scratch)
    version, files, requires = proc.stdout.splitlines()
    files = ast.literal_eval(files)
    assert version == project_version()
    assert "smtpd.py" in files and "smtpd-stubs/__init__.pyi" in files, files
    # Nothing else at the top level: one module and its stub package.
    assert [f for f in files if f != "smtpd.py"
            and not (f.startswith("smtpd-stubs/") and f.endswith(".pyi"))] == []
    assert requires == repr(["pyasynchat", "pyasyncore"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(server, port, within=LISTEN_TIMEOUT):
    """An SMTP client connected to the server, or None if the server died first.

    Connection attempts are retried until the server listens (for at most
    *within* seconds), so no stray probe connection ever reaches it.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return None
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=SMTP_TIMEOUT)
        except ConnectionRefusedError:
            time.sleep(0.05)   # polling interval, not synchronisation
    raise AssertionError(f"server did not listen on port {port} within {within}s")


def _stop(proc):
    """Interrupt the server like Ctrl-C (it exits cleanly, flushing stdout); return its output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_debugging_server_cli(venv_python, scratch):
    """`python -m smtpd -n -c DebuggingServer` receives a message and prints it.

    The output is read after an interrupt (Ctrl-C, which the CLI handles by
    exiting cleanly), so this does not depend on when the server flushes.
    """
    message = "Subject: hello\r\n\r\nHello, pysmtpd.\r\n"
    for _ in range(3):   # another process may take the free port first
        port = _free_port()
        server = subprocess.Popen(
            [venv_python, "-m", "smtpd", "-n", "-c", "DebuggingServer",
             f"127.0.0.1:{port}"],
            cwd=scratch, env=_clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            client = _connect(server, port)
            if client is None:
                continue
            with client:
                refused = client.sendmail("alice@example.org", ["bob@example.org"],
                                          message)
            assert refused == {}
        finally:
            stdout, stderr = _stop(server)
        break
    else:
        pytest.fail(f"the server never came up; last stderr:\n{stderr}")
    # As in 3.11, the CLI offers no SIZE, so smtplib sends no MAIL options.
    expected = ("---------- MESSAGE FOLLOWS ----------\n"
                "b'Subject: hello'\n"
                "b'X-Peer: 127.0.0.1'\n"
                "b''\n"
                "b'Hello, pysmtpd.'\n"
                "------------ END MESSAGE ------------\n")
    assert expected in stdout, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert stdout.count("MESSAGE FOLLOWS") == 1
    assert "Traceback" not in stderr, stderr
