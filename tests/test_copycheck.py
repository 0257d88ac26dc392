"""tests/copycheck.py, the check that smtpd.py holds no code of CPython's.

It must pass on the smtpd.py of this checkout and fail once six consecutive
code lines of CPython 3.11's smtpd.py are pasted in, however they are
indented or commented.  The copied lines are read from the machine's 3.11 at
test time; none of them is in this file.
"""

import io
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.append(HERE)

import copycheck  # noqa: E402

CHECKOUT_SMTPD = os.path.join(os.path.dirname(HERE), "smtpd.py")
SCRIPT = os.path.join(HERE, "copycheck.py")


@pytest.fixture(scope="module")
def reference():
    """CPython 3.11's smtpd.py, or skip (fail under CI, as the other oracle tests)."""
    try:
        return copycheck.reference_path()
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"copycheck needs python3.11's smtpd.py: {exc}")
        pytest.skip(f"no python3.11 with its smtpd: {exc}")


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args],
                          capture_output=True, text=True, timeout=60)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def reference_block(reference, size):
    """*size* consecutive code lines of 3.11's smtpd.py that make a block of
    their own: the first run of statements at one indentation level."""
    with open(reference, "rb") as f:
        source = f.read()
    lines = source.decode("utf-8").splitlines()
    code = copycheck.code_lines(source)
    for start in range(len(code) - size):
        numbers = [number for number, _ in code[start:start + size]]
        if numbers[-1] - numbers[0] != size - 1:
            continue            # a comment or blank line in between
        block = [lines[n - 1] for n in numbers]
        indent = len(block[0]) - len(block[0].lstrip())
        if indent and all(len(line) - len(line.lstrip()) == indent for line in block):
            return [line[indent:] for line in block]
    raise AssertionError("no block of %d code lines in %s" % (size, reference))


# -- the project's smtpd.py -----------------------------------------------------

def test_passes_on_todays_smtpd(reference):
    result = run_script(CHECKOUT_SMTPD, reference)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 run(s) over it" in result.stdout


def test_finds_reference_by_itself_and_defaults_to_the_checkout(reference):
    result = run_script()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "longest run of code lines also in CPython's smtpd.py" in result.stdout


def test_fails_on_six_pasted_lines_of_cpython(reference, tmp_path):
    with open(CHECKOUT_SMTPD) as f:
        ours = f.read().splitlines()
    pasted = ["def _pasted(self):"] + ["    " + line for line in reference_block(reference, 6)]
    candidate = write(tmp_path / "smtpd.py", ours + [""] + pasted)
    result = run_script(candidate, reference)
    assert result.returncode == 1, result.stdout
    assert "6 lines in common" in result.stdout
    assert "1 run(s) over it" in result.stdout


def test_five_pasted_lines_pass(reference, tmp_path):
    with open(CHECKOUT_SMTPD) as f:
        ours = f.read().splitlines()
    block = reference_block(reference, 6)[:5]
    candidate = write(tmp_path / "smtpd.py",
                      ours + ["", "def _pasted(self):"] + ["    " + line for line in block])
    with open(reference, "rb") as f:
        reference_code = {text for _, text in copycheck.code_lines(f.read())}
    result = run_script(candidate, reference)
    # The signature line is ours; if it happened to be 3.11's too, the run is 6.
    assert "def _pasted ( self ) :" not in reference_code
    assert result.returncode == 0, result.stdout


# -- the comparison itself --------------------------------------------------------

REFERENCE = [
    '"""A module."""',
    "def handler(self, arg):",
    '    """Say what it does."""',
    "    if not arg:",
    "        self.push('501 Syntax')",
    "        return",
    "    address = arg.strip()",
    "    self.seen.append(address)",
    "    self.push('250 OK')",
    "    return address",
]


@pytest.mark.parametrize("indent, comment", [("", ""), ("    ", "  # ours")])
def test_run_is_found_whatever_the_indentation_and_comments(tmp_path, indent, comment):
    reference = write(tmp_path / "reference.py", REFERENCE)
    copied = ["class Mine:", "    # a comment of our own, in between", "    x = 1"]
    copied += [indent + line + ("" if '"""' in line else comment) for line in REFERENCE[1:]]
    candidate = write(tmp_path / "candidate.py", copied)
    out = io.StringIO()
    runs = copycheck.check(candidate, reference, out)
    # The docstring is not code: the run is def, if, push, return, and the four after.
    assert [run[0] for run in runs] == [8], out.getvalue()


def test_docstrings_and_comments_are_not_compared():
    source = b'"""Doc."""\n# note\nx = 1\n\ndef f():\n    """Doc."""\n    return "s"\n'
    assert [text for _, text in copycheck.code_lines(source)] == [
        "x = 1", "def f ( ) :", 'return "s"']


def test_common_runs_are_maximal_and_longest_first():
    candidate = list("abcdXabcdef")
    reference = list("zabcdefz")
    assert copycheck.common_runs(candidate, reference)[:2] == [(6, 5, 1), (4, 0, 1)]


def test_usage_error(tmp_path):
    result = run_script("--help")
    assert result.returncode == 2
    assert "copycheck.py [CANDIDATE [REFERENCE]]" in result.stderr


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="needs python3.11")
def test_reference_is_the_standard_librarys_not_a_checkouts(tmp_path, monkeypatch):
    # Run from a directory holding an smtpd.py: without -I, python3.11 would import it.
    (tmp_path / "smtpd.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    assert os.path.realpath(copycheck.reference_path()) != str(tmp_path / "smtpd.py")
