"""pysmtpd beside python-deadlib's standard-smtpd, standard-asyncore, standard-asynchat.

Those packages install the very paths pysmtpd and its dependencies install
(``smtpd/``, ``asyncore/__init__.py``, ``asynchat/__init__.py``), and pip lets
the last install win.  The README ("Coming from ...") says what a user meets
and how to get out of it; each test here does it in a throwaway venv: the
project installed from a copy of the checkout, the other packages by name
with pip, and the README's own commands (its ``pip ...`` lines, run with the
venv's pip; ``pip install pysmtpd`` installs the copy of the checkout).

Marked ``install`` like tests/test_install.py, whose helpers it uses.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.append(HERE)

import test_install as install  # noqa: E402

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(sys.version_info < (3, 12),
                       reason="up to 3.11 the standard library's smtpd shadows pysmtpd"),
]

THEIR_PACKAGES = ["standard-smtpd", "standard-asyncore", "standard-asynchat"]
WARNING = ("DeprecationWarning: asyncore was removed in Python 3.12. "
           "The recommended replacement is asyncio.")


# -- the README's commands ---------------------------------------------------------

def readme_commands():
    """The ``pip`` lines of the sh blocks in the README's "Coming from ..." section."""
    root = install.find_project_root()
    readme = os.path.join(root or "", "README.md")
    if not os.path.exists(readme):
        pytest.skip("README.md is not beside the tests")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## Coming from \.\.\.\n(.*?)(?=^## )", text, re.M | re.S).group(1)
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[shlex.split(line) for line in block.splitlines() if line.strip()]
            for block in blocks]


def order_that_works():
    [block, _] = readme_commands()
    return block


def repair():
    [_, [command]] = readme_commands()
    return command


# -- a venv and what runs in it --------------------------------------------------------

class Venv:
    """A fresh venv, with the checkout's copy at hand for `pip install pysmtpd`."""

    def __init__(self, path, source):
        self.path = path
        self.source = source
        self.cwd = path / "cwd"      # no smtpd.py here to shadow anything
        self.cwd.mkdir()
        install._run([sys.executable, "-m", "venv", str(path / "venv")],
                     install.VENV_TIMEOUT, cwd=self.cwd)
        self.python = str(path / "venv" / "bin" / "python")

    def pip(self, *args):
        """Run the venv's pip; `install pysmtpd` means the checkout's copy."""
        args = [str(self.source) if arg == "pysmtpd" else arg for arg in args]
        if args[0] in ("install", "uninstall"):
            args.append("--quiet")
        return install._run([self.python, "-m", "pip", *args],
                            install.PIP_TIMEOUT, cwd=self.cwd).stdout

    def readme(self, command):
        """Run one of the README's `pip ...` command lines in this venv."""
        assert command[0] == "pip", command
        return self.pip(*command[1:])

    def python_c(self, *args):
        """Run python in the venv; (exit status, stdout, stderr), never raises."""
        proc = subprocess.run([self.python, *args], capture_output=True, text=True,
                              timeout=install.RUN_TIMEOUT, stdin=subprocess.DEVNULL,
                              cwd=self.cwd, env=install._clean_env())
        return proc.returncode, proc.stdout, proc.stderr

    def installed(self):
        """{distribution name: files it says it installed} from pip's records."""
        probe = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']"
                 ".lower(): [str(f) for f in d.files or ()] for d in m.distributions()}))")
        status, out, err = self.python_c("-c", probe)
        assert status == 0, err
        return json.loads(out)

    def smtpd_works_under_warnings_as_errors(self):
        status, out, err = self.python_c(
            "-W", "error", "-c", "import smtpd, asyncore, asynchat; print(smtpd.__file__)")
        assert (status, err) == (0, ""), err
        assert out.strip().endswith(os.path.join("site-packages", "smtpd.py"))

    def debugging_server_prints_a_message(self):
        """`python -m smtpd -n -c DebuggingServer` takes one message and prints it;
        return its stderr."""
        port = install._free_port()
        server = subprocess.Popen(
            [self.python, "-m", "smtpd", "-n", "-c", "DebuggingServer", f"127.0.0.1:{port}"],
            cwd=self.cwd, env=install._clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            client = install._connect(server, port)
            assert client is not None, "the server exited before it listened"
            with client:
                assert client.sendmail("a@example.org", ["b@example.org"],
                                       "Subject: coexist\r\n\r\nHi.\r\n") == {}
        finally:
            stdout, stderr = install._stop(server)
        assert "b'Subject: coexist'\nb'X-Peer: 127.0.0.1'\nb''\nb'Hi.'\n" in stdout, stderr
        assert "Traceback" not in stderr, stderr
        return stderr


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = install.find_project_root()
    if root is None:
        pytest.skip("no pysmtpd setup.cfg above this test file")
    copy = tmp_path_factory.mktemp("coexist") / "pysmtpd-src"
    shutil.copytree(root, copy, ignore=install._NOT_COPIED)
    return copy


@pytest.fixture
def venv(tmp_path, source):
    return Venv(tmp_path, source)


# -- the tests ------------------------------------------------------------------------

def test_readme_gives_the_commands_this_module_runs():
    assert order_that_works() == [
        ["pip", "uninstall", "-y", *THEIR_PACKAGES], ["pip", "install", "pysmtpd"]]
    assert repair() == ["pip", "install", "--force-reinstall", "pyasyncore", "pyasynchat"]


def test_the_packages_install_the_same_paths(venv):
    venv.pip("install", "pysmtpd")
    ours = venv.installed()
    venv.pip("install", *THEIR_PACKAGES)
    theirs = venv.installed()
    assert "asyncore/__init__.py" in ours["pyasyncore"]
    assert "asyncore/__init__.py" in theirs["standard-asyncore"]
    assert "asynchat/__init__.py" in ours["pyasynchat"]
    assert "asynchat/__init__.py" in theirs["standard-asynchat"]
    assert "smtpd.py" in ours["pysmtpd"]
    assert "smtpd/__init__.py" in theirs["standard-smtpd"]
    # standard-smtpd's package shadows smtpd.py, and can't be run with -m.
    status, out, err = venv.python_c("-c", "import smtpd; print(smtpd.__file__)")
    assert out.strip().endswith(os.path.join("smtpd", "__init__.py")), (out, err)
    status, out, err = venv.python_c("-m", "smtpd", "-n", "-c", "DebuggingServer")
    assert status == 1
    assert "'smtpd' is a package and cannot be directly executed" in err


def test_the_order_that_works(venv):
    venv.pip("install", *THEIR_PACKAGES)        # what a user coming from them has
    for command in order_that_works():
        venv.readme(command)
    venv.smtpd_works_under_warnings_as_errors()
    assert venv.debugging_server_prints_a_message() == ""


def test_their_asyncore_installed_after_pysmtpd(venv):
    venv.pip("install", "pysmtpd")
    venv.pip("install", "standard-asyncore", "standard-asynchat")

    # Under -W error, their asyncore's warning stops the import.
    status, out, err = venv.python_c("-W", "error", "-c", "import smtpd")
    assert status == 1
    assert err.splitlines()[-1].startswith(WARNING), err

    # Without it, smtpd runs on their asyncore and asynchat (both are 3.11's
    # code), and their warnings are theirs to give: pysmtpd doesn't hide them.
    status, out, err = venv.python_c(
        "-W", "default", "-c", "import smtpd, asyncore; print(asyncore.__file__)")
    assert status == 0, err
    assert WARNING.split(": ", 1)[1] in err
    assert "standard-asyncore" in err
    cli_stderr = venv.debugging_server_prints_a_message()
    assert "DeprecationWarning: asynchat was removed in Python 3.12." in cli_stderr
    assert "standard-asynchat" in cli_stderr

    venv.readme(repair())
    venv.smtpd_works_under_warnings_as_errors()
    assert venv.debugging_server_prints_a_message() == ""


def test_their_packages_uninstalled_after_pysmtpd(venv):
    venv.pip("install", "pysmtpd")
    venv.pip("install", *THEIR_PACKAGES)
    venv.pip("uninstall", "-y", *THEIR_PACKAGES)

    status, out, err = venv.python_c("-c", "import smtpd")
    assert status == 1
    # (3.15 goes on: ". Did you mean: 'asyncio'?")
    assert err.splitlines()[-1].startswith(
        "ModuleNotFoundError: No module named 'asynchat'"), err
    # ... although pip still lists pyasyncore and pyasynchat.
    listed = venv.pip("list", "--format=freeze").lower()
    assert "pyasyncore==" in listed and "pyasynchat==" in listed, listed

    venv.readme(repair())
    venv.smtpd_works_under_warnings_as_errors()
    assert venv.debugging_server_prints_a_message() == ""
