#!/usr/bin/env python3
"""Mutation analysis of smtpd.py against the project's whole test suite.

    python tests/mutation.py --list
    python tests/mutation.py [--results FILE] [--workdir DIR] [--resume]
                             [--operators OP ...] [--diff-sessions N]
    python tests/mutation.py --only ID [ID ...]
    python tests/mutation.py --survivors-of OLD_RESULTS [--results NEW_RESULTS]
    python tests/mutation.py --summary RESULTS

Run it with a Python 3.12+ that has the test requirements installed (pytest,
hypothesis, aiosmtpd, pyasyncore, pyasynchat) and coverage.py, whose wheel
installs the start-up hook that measures subprocesses.  On a shared machine,
run it niced: ``nice -n 15 python tests/mutation.py``.  It never writes to
the checkout: every file it makes is under --workdir, apart from the results
file (and the __pycache__ directories that Python and pytest write next to
the test modules, as in any test run).

A mutant is smtpd.py with one small change: a comparison, boolean or
arithmetic operator swapped; a number moved by one or set to 0; True, False
or None swapped; a string emptied or altered; a simple statement replaced by
``pass``; ``return X`` made ``return None``; the condition of an ``if``,
``while`` or conditional expression negated; ``not`` dropped; ``break`` and
``continue`` swapped.  Mutants are made by editing the source text, never by
unparsing the tree, so every line keeps its number.  Each has a stable id,
LINE:COLUMN:OPERATOR (COLUMN counts characters from 0), and a one-line
description.  Function and class docstrings are not mutated: nothing but
help() reads them.  The module docstring is, because it is the CLI's usage
text.  A ``%`` whose left operand is a string literal is string formatting,
not arithmetic, and is not mutated either: the swap could only raise
TypeError.  Mutants that don't compile, or that are textually identical to
another one, are dropped.

A mutant is *caught* when at least one test fails with it (or it fails to
import), *timed out* ("hang", also caught) when its tests outrun their
timeout, and *survived* when every test it ran passed.

How a mutant is tested
----------------------
Each mutant is written as smtpd.py into a directory of its own that goes
first on sys.path and on PYTHONPATH, so the test process and every Python
process the tests start (the CLI ``python -m smtpd``, the server
subprocesses, CPython 3.11's own test_smtpd.py run by
tests/test_cpython_suite.py) import the mutant; the run stops with an error
if the tests import any other smtpd.  pytest runs with --import-mode=append,
as under tox, so the checkout's own smtpd.py next to test_smtpd.py can't
shadow the mutant, and -x, to stop at the first failure.

To keep the run affordable only the tests that execute the mutated line
run.  Once, before the mutants, the whole suite runs on the unmodified
smtpd.py under coverage.py, with each test's node id as the coverage
context.  Subprocesses are measured too: coverage's start-up hook starts
measuring in every Python process that inherits COVERAGE_PROCESS_START, and
the configuration it names takes its *static* context from an environment
variable that the harness sets to the running test's node id.  So a line that
only a CLI or server subprocess executes is attributed to the test that
started that subprocess, just as a line run in the pytest process is.  That
run also gives each test's duration and outcome; tests that do not pass on
the unmodified module are never selected.  The map is cached in the work
directory and made anew when smtpd.py or any test file changes.

A mutation's line is the first line of the innermost statement holding it
(coverage records statements by their first line).  Its tests are:

1. "line": the tests that executed that line.
2. "scope": a line that ran only while smtpd was being imported -- a ``def``
   or ``class`` line, a default argument value, a class attribute -- gets
   the tests that executed any line of the function or class it belongs to:
   those are the tests that use the value.  A function body that runs while
   smtpd is imported (a descriptor's ``__set_name__``, called from a class
   body) gets the tests of the module-level class around it.
3. "names": a module-level statement gets the tests of the statements that
   read a name it binds (for DATA_SIZE_DEFAULT, the lines using it).
4. "all": anything else -- ``__all__``, a line never executed by any test,
   or one executed only in a subprocess whose coverage data was lost (one
   killed with SIGKILL saves none) -- runs every test of the suite.

The selected tests run cheapest first (from the coverage run's durations),
so that a mutant is usually caught in seconds; tests that took a second or
more run last, each module's tests staying together so that module-scoped
fixtures are set up once.  Ahead of them all come those of the tests that
caught the last few mutants: neighbouring mutants are mostly caught by the
same test.  A mutant's timeout is TIMEOUT_FACTOR times its tests' total
duration plus TIMEOUT_SLACK seconds.

The test suite
--------------
test_smtpd.py and every tests/test_*.py, except:

* tests/test_install.py, and every other test marked ``install`` (deselected
  with -m "not install"): they build the project and install it into fresh
  venvs with pip (minutes per run); they test packaging, and the one thing
  they do with smtpd.py, serving a message from the CLI, the CLI tests do
  too.
* tests/test_copycheck.py: it checks the source text of the checkout's
  smtpd.py against CPython's (tests/copycheck.py), never the module under
  test, so no mutant could change its outcome.
* tests/check_dist.py is no test module (tox's dist env runs it).

tests/test_cpython_suite.py is included: it runs CPython 3.11's own
test_smtpd.py with the directory of the smtpd it imported first on
PYTHONPATH, which is the mutant's directory.  The environment variable CI
is removed for the test runs, so that a test whose prerequisite is missing
(python3.11, the oracle) skips in the coverage run, and so is never
selected, rather than failing for every mutant.

Running the tests in a process of their own per mutant would cost a second
or more each just to import pytest and hypothesis, so the harness imports
them once (never smtpd, nor a test module) and forks a child per mutant,
which runs pytest.main() on a fresh working directory.  The harness is the
subreaper of all the processes the tests start: whatever a test leaves
running when its mutant is done is killed, by pid, before the next one.

Results are appended to the results file, one JSON object per mutant, as
each finishes: --resume skips the mutants already there, --survivors-of runs
again only the survivors of an earlier results file (today's tests against
the mutants that got through before), --only runs the named ids, and
--operators only the mutants of the operators named (the last part of the
ids).  A summary (mutants, caught, timed out, survived, time) closes each
run; --summary prints that of a results file.

What it costs
-------------
On 2 shared cores a caught mutant takes 1 to 7 seconds, but a survivor runs
every test selected for it, up to a minute and a half on a line that every
session executes: the nine test_sessions_match_oracle cases alone take about
85 s with their default 300 hypothesis sessions each.  The whole set (about
1,370 mutants) takes several hours.  For a run within about an hour and a
half, leave out the operators that mostly duplicate others (str-empty
duplicates str-xx; num-1 and num=0 duplicate num+1) and play fewer
differential sessions, then run the survivors again at full size:

    python tests/mutation.py --diff-sessions 30 --resume --operators \
        $(python tests/mutation.py --list | cut -d: -f3 | cut -d' ' -f1 \
          | sort -u | grep -vx -e str-empty -e num-1 -e num=0)
    python tests/mutation.py --survivors-of mutation-results.jsonl \
        --results mutation-rerun.jsonl

tests/mutation-equivalents.txt lists the survivors judged equivalent, or
invisible to users, with the reason for each.
"""

import argparse
import ast
import collections
import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import time
import tokenize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCE = os.path.join(ROOT, "smtpd.py")

# Test modules that are not run; the module docstring says why.
EXCLUDED_TEST_FILES = ("test_install.py", "test_copycheck.py")

DEFAULT_WORKDIR = "/tmp/pysmtpd-mutation"
DEFAULT_RESULTS = "mutation-results.jsonl"
TIMEOUT_FACTOR = 3.0
TIMEOUT_SLACK = 30.0
# Tests that took this long or longer in the coverage run go last.
SLOW_TEST = 1.0
# How many of the tests that caught the latest mutants are tried first.
RECENT_KILLERS = 8

# The variable whose value becomes the static coverage context of every
# measured subprocess: the node id of the test that started it.
CONTEXT_VARIABLE = "PYSMTPD_MUTATION_TEST"

# Exit statuses of a forked test run, besides pytest's own.
EXIT_IMPORT_FAILED = 96      # the mutant raised while being imported
EXIT_WRONG_SMTPD = 97        # the tests imported some other smtpd
EXIT_TESTS_MISSING = 98      # a selected test was not collected
EXIT_HARNESS = 99            # the child itself failed

CAUGHT = "caught"
SURVIVED = "survived"
TIMEOUT = "timeout"
ERROR = "error"

PR_SET_CHILD_SUBREAPER = 36


# -- mutants ------------------------------------------------------------------

Mutant = collections.namedtuple(
    "Mutant", "id line col operator description text stmt_line")

_COMPARISON_SWAPS = {
    ast.Eq: ("==", "!=", "eq-ne"), ast.NotEq: ("!=", "==", "ne-eq"),
    ast.Lt: ("<", "<=", "lt-le"), ast.LtE: ("<=", "<", "le-lt"),
    ast.Gt: (">", ">=", "gt-ge"), ast.GtE: (">=", ">", "ge-gt"),
    ast.Is: ("is", "is not", "is-isnot"), ast.IsNot: ("is not", "is", "isnot-is"),
    ast.In: ("in", "not in", "in-notin"), ast.NotIn: ("not in", "in", "notin-in"),
}
_ARITHMETIC_SWAPS = {
    ast.Add: ("+", "-", "add-sub"), ast.Sub: ("-", "+", "sub-add"),
    ast.Mult: ("*", "/", "mul-div"), ast.Div: ("/", "*", "div-mul"),
    ast.FloorDiv: ("//", "/", "floordiv-div"), ast.Mod: ("%", "/", "mod-div"),
    ast.Pow: ("**", "*", "pow-mul"),
    ast.LShift: ("<<", ">>", "lshift-rshift"), ast.RShift: (">>", "<<", "rshift-lshift"),
    ast.BitOr: ("|", "&", "bitor-bitand"), ast.BitAnd: ("&", "|", "bitand-bitor"),
    ast.BitXor: ("^", "&", "bitxor-bitand"),
}
# Statements that "drop" replaces by pass.  Imports, pass and docstrings are
# left alone, and so is "return X", which "return-none" mutates; compound
# statements are mutated through their parts.
_DROPPABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise,
              ast.Delete, ast.Assert, ast.Return, ast.Global, ast.Nonlocal)


class _Source:
    """smtpd.py's text, addressed by (line, character column) positions."""

    def __init__(self, text):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self._line_starts = [0]
        for line in self.lines:
            self._line_starts.append(self._line_starts[-1] + len(line))

    def offset(self, line, col):
        return self._line_starts[line - 1] + col

    def char_col(self, line, byte_col):
        """ast gives columns in UTF-8 bytes; edits need characters."""
        return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8"))

    def start(self, node):
        return node.lineno, self.char_col(node.lineno, node.col_offset)

    def end(self, node):
        return node.end_lineno, self.char_col(node.end_lineno, node.end_col_offset)

    def segment(self, start, end):
        return self.text[self.offset(*start):self.offset(*end)]

    def replace(self, start, end, new):
        return (self.text[:self.offset(*start)] + new + self.text[self.offset(*end):])


def _keep_lines(old, new):
    """new, padded with the newlines of old that it lacks, so lines stay put."""
    return new + "\n" * (old.count("\n") - new.count("\n"))


def _docstring_nodes(tree):
    """The Constant nodes that are function or class docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                found.add(id(body[0].value))
    return found


def _innermost_statements(tree):
    """Map each line to (the innermost statement holding it, that one's parent).

    For a line of a compound statement's header (an ``if`` test that spans
    lines, a decorator, a default value) that is the compound statement.
    """
    owner = {}

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                first = min([child.lineno]
                            + [d.lineno for d in getattr(child, "decorator_list", ())])
                for line in range(first, child.end_lineno + 1):
                    owner[line] = (child, node)
            visit(child)

    visit(tree)
    return owner


def _string_edits(token):
    """(operator, description, new token text) for a STRING token."""
    text = token.string
    prefix_length = len(text) - len(text.lstrip("rRbBuU"))
    prefix, body = text[:prefix_length], text[prefix_length:]
    quote = body[:3] if body[:3] in ('"""', "'''") else body[0]
    content = body[len(quote):-len(quote)]
    shown = text if len(text) <= 40 else text[:37] + "..."
    edits = []
    if content:
        # A triple-quoted string keeps its newlines, so that lines stay put.
        emptied = prefix + quote + "\n" * content.count("\n") + quote
        edits.append(("str-empty", f"string {shown} emptied", emptied))
    edits.append(("str-xx", f"string {shown} prefixed with 'XX'",
                  prefix + quote + "XX" + content + quote))
    return edits


def generate_mutants(text):
    """Return the list of mutants of the module source text, in line order."""
    source = _Source(text)
    tree = ast.parse(text)
    statements = _innermost_statements(tree)
    docstrings = _docstring_nodes(tree)
    candidates = []

    def add(start, operator, description, end=None, new=None, full_text=None):
        if full_text is None:
            full_text = source.replace(start, end, new)
        line, col = start
        candidates.append((line, col, operator, description, full_text))

    def node_text(node):
        return source.segment(source.start(node), source.end(node))

    # Which string constants are f-string parts or docstrings: not mutated.
    skipped_strings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for part in ast.walk(node):
                skipped_strings.add(id(part))
    skipped_strings |= docstrings

    def swap_operator(left, right, old, new, operator):
        """Replace the operator old standing between the nodes left and right."""
        between_start = source.end(left)
        found = _find_operator(source.segment(between_start, source.start(right)), old)
        if found is not None:
            index, length = found
            add(_advance(source, between_start, index), operator, f"{old!r} -> {new!r}",
                end=_advance(source, between_start, index + length), new=new)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for left, op, right in zip([node.left, *node.comparators[:-1]], node.ops,
                                       node.comparators, strict=True):
                swap_operator(left, right, *_COMPARISON_SWAPS[type(op)])
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:], strict=False):
                swap_operator(left, right, old, new, f"{old}-{new}")
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC_SWAPS:
            formatting = (isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant)
                          and isinstance(node.left.value, (str, bytes)))
            if not formatting:
                swap_operator(node.left, node.right, *_ARITHMETIC_SWAPS[type(node.op)])
        elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITHMETIC_SWAPS:
            old, new, name = _ARITHMETIC_SWAPS[type(node.op)]
            swap_operator(node.target, node.value, old + "=", new + "=", name)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start = source.start(node)
            add(start, "not-drop", f"'not' dropped from {_short(node_text(node))}",
                end=source.start(node.operand), new="")
        elif isinstance(node, ast.Constant) and id(node) not in skipped_strings:
            _constant_mutants(source, node, add)
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            test = node.test
            keyword = {ast.If: "if", ast.While: "while", ast.IfExp: "if-expression"}[type(node)]
            text_of_test = node_text(test)
            add(source.start(test), "negate",
                f"{keyword} condition {_short(text_of_test)} negated",
                end=source.end(test), new=f"not ({text_of_test})")
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            add(source.start(node.value), "return-none",
                f"return {_short(node_text(node.value))} -> return None",
                end=source.end(node.value), new=_keep_lines(node_text(node.value), "None"))
        if isinstance(node, ast.Break):
            add(source.start(node), "break-continue", "break -> continue",
                end=source.end(node), new="continue")
        if isinstance(node, ast.Continue):
            add(source.start(node), "continue-break", "continue -> break",
                end=source.end(node), new="break")
        if (isinstance(node, _DROPPABLE) and _whole_lines(source, node)
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
                and not (isinstance(node, ast.Return) and node.value is not None)):
            old = node_text(node)
            add(source.start(node), "drop", f"statement {_short(old)} -> pass",
                end=source.end(node), new=_keep_lines(old, "pass"))

    # String literals come from the tokens: implicit concatenations are one
    # Constant node but several tokens, each mutated on its own.
    string_nodes = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            string_nodes[source.start(node)] = node
    for token in _tokens(text):
        if token.type != tokenize.STRING:
            continue
        node = _constant_holding(string_nodes, source, token.start)
        if node is None or id(node) in skipped_strings:
            continue
        for operator, description, new in _string_edits(token):
            add(token.start, operator, description, end=token.end, new=new)

    mutants, seen = [], {text}
    lines_before = len(source.lines)
    for line, col, operator, description, full_text in sorted(
            candidates, key=lambda c: (c[0], c[1], c[2])):
        if full_text in seen:
            continue
        seen.add(full_text)
        if len(full_text.splitlines()) != lines_before:
            raise AssertionError(f"{line}:{col}:{operator} moved lines")
        try:
            compile(full_text, SOURCE, "exec")
        except SyntaxError:
            continue
        mutant_id = f"{line}:{col}:{operator}"
        mutants.append(Mutant(mutant_id, line, col, operator,
                              f"line {line}: {description}", full_text,
                              statements[line][0].lineno))
    ids = [m.id for m in mutants]
    if len(ids) != len(set(ids)):
        raise AssertionError("mutant ids are not unique")
    return mutants


def _constant_mutants(source, node, add):
    value = node.value
    start, end = source.start(node), source.end(node)
    if value is True:
        add(start, "true-false", "True -> False", end=end, new="False")
    elif value is False:
        add(start, "false-true", "False -> True", end=end, new="True")
    elif value is None:
        add(start, "none-true", "None -> True", end=end, new="True")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        old = source.segment(start, end)
        for operator, new_value in (("num+1", value + 1), ("num-1", value - 1), ("num=0", 0)):
            if new_value != value:
                add(start, operator, f"number {old} -> {new_value!r}", end=end,
                    new=repr(new_value))


def _constant_holding(string_nodes, source, position):
    """The str/bytes Constant whose span holds the token at position."""
    for node in string_nodes.values():
        if source.start(node) <= position < source.end(node):
            return node
    return None


def _tokens(text):
    return list(tokenize.generate_tokens(io.StringIO(text).readline))


def _find_operator(between, operator):
    """(index, length) of operator in the text between two operands, or None.

    The text holds nothing else but brackets, blanks, backslashes and comments;
    a word operator ("is not") may have any blanks between its words.
    """
    # Blank out comments, keeping every index in place.
    code = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), between)
    if operator[0].isalpha():
        pattern = r"\b" + r"\s+".join(operator.split()) + r"\b"
    else:
        # "<" must not match the start of "<=", nor "*" that of "**".
        pattern = re.escape(operator) + r"(?![=*/<>])"
    match = re.search(pattern, code)
    return (match.start(), match.end() - match.start()) if match else None


def _advance(source, start, count):
    """The (line, col) count characters after start."""
    offset = source.offset(*start) + count
    line = start[0]
    while source.offset(line + 1, 0) <= offset:
        line += 1
    return line, offset - source.offset(line, 0)


def _whole_lines(source, node):
    """Whether node's text is alone on its lines (no ';' neighbours)."""
    (first, first_col), (last, last_col) = source.start(node), source.end(node)
    before = source.lines[first - 1][:first_col]
    after = source.lines[last - 1][last_col:].strip()
    return not before.strip() and (not after or after.startswith("#"))


def _short(text, limit=50):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- the test suite -----------------------------------------------------------

def suite_files():
    """The test modules of the suite, in the order pytest would take them."""
    files = [os.path.join(ROOT, "test_smtpd.py")]
    for name in sorted(os.listdir(HERE)):
        if (name.startswith("test_") and name.endswith(".py")
                and name not in EXCLUDED_TEST_FILES):
            files.append(os.path.join(HERE, name))
    return files


def suite_fingerprint(source_text):
    """A hash of smtpd.py and every file under tests/: the coverage map's key."""
    digest = hashlib.sha256(source_text.encode("utf-8"))
    paths = [os.path.join(ROOT, "test_smtpd.py")]
    for directory, subdirectories, names in os.walk(HERE):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        paths.extend(os.path.join(directory, n) for n in sorted(names)
                     if n.endswith((".py", ".txt", ".ini", ".toml"))
                     and n not in ("mutation.py", "mutation-equivalents.txt"))
    for path in paths:
        digest.update(path.encode("utf-8"))
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


class _RunPlugin:
    """pytest plugin of a forked run: picks, orders and watches the tests.

    selection: node ids to run in that order, or None for all (the coverage
    run).  expected_dir: where smtpd must come from.  coverage: the run's
    Coverage object, whose context follows the running test.
    """

    def __init__(self, selection, expected_dir, report_path, coverage=None):
        self.selection = selection
        self.expected_dir = os.path.realpath(expected_dir)
        self.report_path = report_path
        self.coverage = coverage
        self.outcomes = {}
        self.durations = collections.Counter()
        self.first_failure = None

    def pytest_collection_modifyitems(self, session, config, items):
        if self.selection is None:
            return
        by_id = {item.nodeid: item for item in items}
        missing = [nodeid for nodeid in self.selection if nodeid not in by_id]
        if missing:
            self._write({"missing": missing})
            os._exit(EXIT_TESTS_MISSING)
        wanted = set(self.selection)
        deselected = [item for item in items if item.nodeid not in wanted]
        config.hook.pytest_deselected(items=deselected)
        items[:] = [by_id[nodeid] for nodeid in self.selection]

    def pytest_collection_finish(self, session):
        module = sys.modules.get("smtpd")
        if module is None:
            return
        found = os.path.dirname(os.path.realpath(module.__file__))
        if found != self.expected_dir:
            self._write({"wrong_smtpd": module.__file__})
            os._exit(EXIT_WRONG_SMTPD)

    def pytest_runtest_protocol(self, item, nextitem):
        os.environ[CONTEXT_VARIABLE] = item.nodeid
        if self.coverage is not None:
            self.coverage.switch_context(item.nodeid)

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] += report.duration
        if report.failed and self.first_failure is None:
            self.first_failure = report.nodeid
        previous = self.outcomes.get(report.nodeid, "passed")
        if report.failed or previous == "failed":
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped or previous == "skipped":
            self.outcomes[report.nodeid] = "skipped"
        else:
            self.outcomes[report.nodeid] = "passed"

    def pytest_sessionfinish(self, session, exitstatus):
        os.environ.pop(CONTEXT_VARIABLE, None)
        if self.coverage is not None:
            self.coverage.switch_context("")
        self._write({"first_failure": self.first_failure,
                     "outcomes": self.outcomes,
                     "durations": dict(self.durations)})

    def _write(self, data):
        with open(self.report_path, "w", encoding="utf-8") as f:
            json.dump(data, f)


def _warm_up():
    """Import what every test run needs, once, before the first fork.

    Not smtpd and no test module: those must come fresh from each mutant.
    """
    import email.parser  # noqa: F401
    import smtplib  # noqa: F401

    import hypothesis
    import hypothesis.strategies  # noqa: F401
    import pytest  # noqa: F401
    try:
        import aiosmtpd.controller  # noqa: F401
    except ImportError:
        pass
    if "smtpd" in sys.modules:
        raise RuntimeError("the harness imported smtpd")


def _set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _descendants():
    """Pids of every live process below this one."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name, in brackets, may hold spaces: read past it.
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] != b"Z":
            parents[int(name)] = int(fields[1])
    me, found = os.getpid(), []
    frontier = [me]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                found.append(pid)
                frontier.append(pid)
    return found


def _clean_up_children():
    """Kill what the tests left running, and reap it."""
    for _ in range(3):
        pids = _descendants()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        _reap_orphans()
    _reap_orphans()


def _stop(signum, frame):
    for pid in _descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap_orphans()
    raise SystemExit(f"stopped by signal {signum}")


def _reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_forked(smtpd_dir, test_paths, selection, workdir, timeout, coverage_rc=None,
               environment=None):
    """Run pytest in a forked child on the smtpd in smtpd_dir.

    environment: variables to set (to None: to remove) for the tests.
    Returns (exit status or None on timeout, the plugin's report, seconds).
    """
    rundir = os.path.join(workdir, "run")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    report_path = os.path.join(workdir, "report.json")
    log_path = os.path.join(workdir, "last-run.log")
    if os.path.exists(report_path):
        os.remove(report_path)
    started = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = EXIT_HARNESS
        try:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for name, value in (environment or {}).items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            status = _child(smtpd_dir, test_paths, selection, rundir, report_path,
                            log_path, coverage_rc)
        except BaseException:
            import traceback
            with open(log_path, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
        finally:
            os._exit(status)
    status = _wait(pid, timeout, started)
    seconds = time.monotonic() - started
    _clean_up_children()
    report = {}
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    return status, report, seconds


def _wait(pid, timeout, started):
    """The child's exit code (-N for signal N), or None once it timed out."""
    while True:
        try:
            done, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            raise RuntimeError("the test run's process vanished") from None
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        if done != 0:
            continue                    # an orphan of the tests, reaped
        if time.monotonic() - started > timeout:
            for pid_to_kill in [pid] + _descendants():
                try:
                    os.kill(pid_to_kill, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)


def _child(smtpd_dir, test_paths, selection, rundir, report_path, log_path, coverage_rc):
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(rundir)
    # Started in the background, the harness may ignore SIGINT, and so would
    # every process the tests start: a CLI server that a test stops with
    # SIGINT would never stop.  A handled signal is reset to the default in a
    # new program, where an ignored one stays ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ["PYTHONPATH"] = smtpd_dir
    for name in ("CI", "PYSMTPD_REQUIRE_INSTALLED", "PYTHONSAFEPATH", CONTEXT_VARIABLE):
        os.environ.pop(name, None)
    sys.path.insert(0, smtpd_dir)
    import pytest

    pytest_script = shutil.which("pytest", path=os.path.dirname(sys.executable))
    args = ["-p", "no:cacheprovider", "--import-mode=append", f"--rootdir={ROOT}",
            # Tests that build and install the project into venvs.
            "-m", "not install",
            "-c", os.path.join(ROOT, "pyproject.toml"), "-q", "-rfE",
            # pytest can't rewrite the asserts of the plugins imported before
            # the fork (hypothesis) and says so; they have no asserts to rewrite.
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    coverage = None
    if coverage_rc is not None:
        import coverage as coverage_module
        os.environ["COVERAGE_PROCESS_START"] = coverage_rc
        coverage = coverage_module.Coverage(config_file=coverage_rc)
        coverage.start()
    else:
        args.append("-x")
        # A mutant that can't even be imported needs no test run.
        try:
            import smtpd  # noqa: F401
        except BaseException:
            import traceback
            traceback.print_exc()
            return EXIT_IMPORT_FAILED
    sys.argv = [pytest_script or "pytest", *args, *test_paths]
    plugin = _RunPlugin(selection, smtpd_dir, report_path, coverage)
    try:
        status = pytest.main([*args, *test_paths], plugins=[plugin])
    finally:
        if coverage is not None:
            coverage.stop()
            coverage.save()
    sys.stdout.flush()
    sys.stderr.flush()
    return int(status)


# -- the coverage map ---------------------------------------------------------

def build_coverage_map(source_text, workdir):
    """Run the suite once under coverage: {line: [node ids]}, durations, outcomes."""
    pristine = os.path.join(workdir, "pristine")
    os.makedirs(pristine, exist_ok=True)
    with open(os.path.join(pristine, "smtpd.py"), "w", encoding="utf-8") as f:
        f.write(source_text)
    data_dir = os.path.join(workdir, "coverage")
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir)
    # The CLI run as root without -n becomes nobody, and saves its data here.
    os.chmod(data_dir, 0o1777)
    for path in (workdir, pristine):
        os.chmod(path, 0o755)
    rc = os.path.join(workdir, "coverage.rc")
    with open(rc, "w", encoding="utf-8") as f:
        f.write("[run]\n"
                f"include = {os.path.join(pristine, 'smtpd.py')}\n"
                "parallel = true\n"
                "sigterm = true\n"
                f"data_file = {os.path.join(data_dir, '.coverage')}\n"
                # Each measured subprocess records the test that started it.
                f"context = ${{{CONTEXT_VARIABLE}}}\n"
                "disable_warnings = no-data-collected, module-not-measured,"
                " module-not-imported\n")
    print("coverage run of the whole suite on the unmodified smtpd.py ...", flush=True)
    status, report, seconds = run_forked(pristine, suite_files(), None, workdir,
                                         timeout=3600, coverage_rc=rc,
                                         environment={"PYSMTPD_DIFF_SESSIONS": None})
    print(f"  done in {seconds:.0f}s, pytest exit status {status}", flush=True)
    outcomes = report.get("outcomes", {})
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    if status != 0 or failed:
        with open(os.path.join(workdir, "last-run.log"), encoding="utf-8") as f:
            sys.stderr.write(f.read()[-5000:])
        raise SystemExit(f"the suite does not pass on the unmodified smtpd.py "
                         f"(exit status {status}; failed: {failed})")

    import coverage as coverage_module
    cov = coverage_module.Coverage(config_file=rc)
    cov.combine([data_dir])
    data = cov.get_data()
    measured = os.path.join(pristine, "smtpd.py")
    by_line = {}
    import_time = []
    for line, contexts in (data.contexts_by_lineno(measured) or {}).items():
        by_line[line] = sorted({c for c in contexts if c})
        if "" in contexts:
            # Run by pytest's own process before any test: while importing.
            import_time.append(line)
    return {"lines": by_line, "import_time": sorted(import_time),
            "outcomes": outcomes, "durations": report["durations"]}


def load_coverage_map(source_text, workdir, rebuild=False):
    fingerprint = suite_fingerprint(source_text)
    path = os.path.join(workdir, "coverage-map.json")
    if not rebuild and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("fingerprint") == fingerprint and "import_time" in cached:
            cached["lines"] = {int(k): v for k, v in cached["lines"].items()}
            return cached
    built = build_coverage_map(source_text, workdir)
    built["fingerprint"] = fingerprint
    with open(path, "w", encoding="utf-8") as f:
        json.dump(built, f)
    return built


class Selector:
    """Chooses and orders the tests for each mutant (see the module docstring)."""

    def __init__(self, source_text, coverage_map):
        self.tree = ast.parse(source_text)
        self.durations = coverage_map["durations"]
        self.passing = {n for n, o in coverage_map["outcomes"].items() if o == "passed"}
        self.by_line = {line: {n for n in ids if n in self.passing}
                        for line, ids in coverage_map["lines"].items()}
        self.import_time = set(coverage_map["import_time"])
        self.statements = _innermost_statements(self.tree)
        self._pytest_order = {n: i for i, n in enumerate(coverage_map["outcomes"])}
        # Which statements read each name.
        self._name_users = collections.defaultdict(set)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                statement, _ = self.statements[node.lineno]
                self._name_users[node.id].add(statement.lineno)

    def _tests_of_span(self, node):
        """The tests that ran any line of a function's or class's body."""
        found = set()
        for line in range(node.body[0].lineno, node.end_lineno + 1):
            found |= self.by_line.get(line, set())
        return found

    def select(self, mutant):
        """(ordered node ids, how they were chosen)."""
        statement, parent = self.statements[mutant.line]
        scope = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        tests = set(self.by_line.get(statement.lineno, ()))
        # Statements run while smtpd is imported (the module's and the class
        # bodies', def and class lines) are attributed only to the tests whose
        # subprocesses imported it, not to the tests that use what they made:
        # those are found through the function, class or name.
        users = None
        if isinstance(statement, scope):
            # A def or class line (a default value, a base class): the tests
            # that run the function or class.
            users, how = self._tests_of_span(statement), "scope"
        elif isinstance(parent, ast.ClassDef):
            # A class attribute: the tests that use the class.
            users, how = self._tests_of_span(parent), "scope"
        elif (not isinstance(parent, ast.Module)
              and statement.lineno in self.import_time):
            # A function's body run while smtpd is imported (__set_name__ of
            # a descriptor in a class body): what it sets up is used later,
            # by the tests of the classes around it.
            users, how = self._tests_of_span(self._outermost_class(mutant.line)
                                             or parent), "scope"
        if isinstance(parent, ast.Module):
            # A module-level statement: the tests of the code that reads the
            # names it binds.
            users, how = users or set(), "names"
            for name in self._bound_names(statement):
                for line in self._name_users.get(name, ()):
                    user, user_parent = self.statements[line]
                    users |= self.by_line.get(line, set())
                    if isinstance(user, scope):
                        users |= self._tests_of_span(user)
                    elif isinstance(user_parent, ast.ClassDef):
                        users |= self._tests_of_span(user_parent)
        if users is None:
            how = "line"
        elif users:
            tests |= users
        else:
            tests = set()
        if not tests:
            tests, how = set(self.passing), "all"
        return self.order(tests), how

    def _outermost_class(self, line):
        """The module-level class whose body holds line, or None."""
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.lineno <= line <= node.end_lineno:
                return node
        return None

    def _bound_names(self, statement):
        if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            return [statement.name]
        if statement is self.tree.body[0] and isinstance(statement, ast.Expr):
            return ["__doc__"]          # the module docstring: the usage text
        targets = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
            targets = [statement.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]

    def order(self, tests):
        """Cheapest first; slow tests last; each module's tests together."""
        def module(nodeid):
            return nodeid.split("::")[0]
        fast = [n for n in tests if self.durations.get(n, 0) < SLOW_TEST]
        slow = [n for n in tests if self.durations.get(n, 0) >= SLOW_TEST]
        ordered = []
        for group in (fast, slow):
            cost = collections.Counter()
            for nodeid in group:
                cost[module(nodeid)] += self.durations.get(nodeid, 0)
            ordered.extend(sorted(group, key=lambda n: (
                cost[module(n)], module(n), self._pytest_order.get(n, 0))))
        return ordered

    def cost(self, tests):
        return sum(self.durations.get(n, 0) for n in tests)


# -- the run ------------------------------------------------------------------

def read_results(path):
    results = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    results.append(json.loads(line))
    return results


def classify(status, report):
    """(status, detail) of a finished mutant run."""
    if status is None:
        return TIMEOUT, "hang: its tests outran the timeout"
    if status == 0:
        return SURVIVED, "every selected test passed"
    if status == 1:
        return CAUGHT, f"failed: {report.get('first_failure')}"
    if status == 2:
        return CAUGHT, "pytest interrupted (collection error)"
    if status == EXIT_IMPORT_FAILED:
        return CAUGHT, "smtpd does not import"
    if status < 0:
        return CAUGHT, f"the test process died of signal {-status}"
    return ERROR, f"harness error: exit status {status} {report}"


def run_mutants(mutants, selector, args, source_text):
    workdir = args.workdir
    source_hash = hashlib.sha256(source_text.encode("utf-8")).hexdigest()
    totals = collections.Counter()
    started = time.monotonic()
    mutant_dir = os.path.join(workdir, "mutant")
    recent_killers = collections.deque(maxlen=RECENT_KILLERS)
    for number, mutant in enumerate(mutants, 1):
        tests, how = selector.select(mutant)
        # The tests that caught the last few mutants go first: neighbouring
        # mutants tend to be caught by the same test.
        chosen = set(tests)
        first = [n for n in recent_killers if n in chosen]
        tests = first + [n for n in tests if n not in first]
        shutil.rmtree(mutant_dir, ignore_errors=True)
        os.makedirs(mutant_dir)
        os.chmod(mutant_dir, 0o755)
        with open(os.path.join(mutant_dir, "smtpd.py"), "w", encoding="utf-8") as f:
            f.write(mutant.text)
        paths = sorted({os.path.join(ROOT, n.split("::")[0]) for n in tests})
        timeout = TIMEOUT_FACTOR * selector.cost(tests) + TIMEOUT_SLACK
        environment = {}
        if args.diff_sessions is not None:
            environment["PYSMTPD_DIFF_SESSIONS"] = str(args.diff_sessions)
        status, report, seconds = run_forked(mutant_dir, paths, tests, workdir, timeout,
                                             environment=environment)
        verdict, detail = classify(status, report)
        killer = report.get("first_failure")
        if killer:
            if killer in recent_killers:
                recent_killers.remove(killer)
            recent_killers.appendleft(killer)
        totals[verdict] += 1
        record = {"id": mutant.id, "description": mutant.description,
                  "operator": mutant.operator, "line": mutant.line,
                  "status": verdict, "detail": detail,
                  "selection": how, "tests": len(tests),
                  "ran": len(report.get("outcomes", {})),
                  "seconds": round(seconds, 2), "timeout": round(timeout, 1),
                  "diff_sessions": args.diff_sessions,
                  "smtpd_sha256": source_hash}
        if verdict == ERROR:
            log = os.path.join(workdir, f"error-{mutant.id.replace(':', '_')}.log")
            shutil.copyfile(os.path.join(workdir, "last-run.log"), log)
            record["log"] = log
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[{number}/{len(mutants)} {time.monotonic() - started:6.0f}s] "
              f"{verdict:8} {seconds:6.1f}s {how:5} {len(tests):4} tests  "
              f"{mutant.id}  {mutant.description}", flush=True)
    return totals, time.monotonic() - started


def print_summary(results, seconds=None):
    counts = collections.Counter(r["status"] for r in results)
    print()
    print(f"mutants:   {len(results)}")
    print(f"caught:    {counts[CAUGHT] + counts[TIMEOUT]}"
          f"  (of which timed out: {counts[TIMEOUT]})")
    print(f"survived:  {counts[SURVIVED]}")
    if counts[ERROR]:
        print(f"errors:    {counts[ERROR]}  (harness errors; see their logs)")
    if seconds is None:
        seconds = sum(r.get("seconds", 0) for r in results)
        print(f"time:      {seconds / 60:.1f} min (the mutants' test runs added up)")
    else:
        print(f"time:      {seconds / 60:.1f} min")
    if results:
        killed = counts[CAUGHT] + counts[TIMEOUT]
        print(f"score:     {100 * killed / max(1, killed + counts[SURVIVED]):.1f}%")
    survivors = [r for r in results if r["status"] == SURVIVED]
    if survivors:
        print("\nsurvivors:")
        for record in survivors:
            print(f"  {record['id']:24} {record['description']}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Mutation analysis of smtpd.py against the test suite.")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--results", default=DEFAULT_RESULTS,
                        help="JSON lines file the results are appended to "
                             f"(default: {DEFAULT_RESULTS})")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR,
                        help=f"scratch directory (default: {DEFAULT_WORKDIR})")
    parser.add_argument("--resume", action="store_true",
                        help="skip the mutants already in the results file")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--survivors-of", metavar="RESULTS",
                        help="run only the survivors of an earlier results file")
    parser.add_argument("--operators", nargs="+", metavar="OPERATOR",
                        help="run only mutants of these operators (as in the ids)")
    parser.add_argument("--diff-sessions", type=int, metavar="N",
                        help="PYSMTPD_DIFF_SESSIONS for the mutant runs: how many "
                             "hypothesis sessions each test_sessions_match_oracle "
                             "case plays (the tests' default is 300)")
    parser.add_argument("--summary", metavar="RESULTS",
                        help="print the summary of a results file and exit")
    parser.add_argument("--rebuild-map", action="store_true",
                        help="run the coverage pass again even if it is cached")
    parser.add_argument("--source", default=SOURCE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def choose(mutants, args):
    """The mutants this invocation runs, by --only, --survivors-of, --operators, --resume."""
    by_id = {m.id: m for m in mutants}
    chosen = mutants
    if args.only:
        unknown = [i for i in args.only if i not in by_id]
        if unknown:
            raise SystemExit(f"no such mutant: {', '.join(unknown)}")
        chosen = [by_id[i] for i in args.only]
    if args.survivors_of:
        survivors = [r for r in read_results(args.survivors_of) if r["status"] == SURVIVED]
        chosen = []
        for record in survivors:
            mutant = by_id.get(record["id"])
            if mutant is None or mutant.description != record["description"]:
                print(f"skipped {record['id']}: smtpd.py changed, no such mutant now",
                      file=sys.stderr)
                continue
            chosen.append(mutant)
    if args.operators:
        chosen = [m for m in chosen if m.operator in args.operators]
    if args.resume:
        done = {r["id"] for r in read_results(args.results)}
        chosen = [m for m in chosen if m.id not in done]
    return chosen


def main(argv=None):
    args = parse_args(argv)
    with open(args.source, encoding="utf-8") as f:
        source_text = f.read()
    mutants = generate_mutants(source_text)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id:24} {mutant.description}")
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return 0
    if args.summary:
        print_summary(read_results(args.summary))
        return 0
    chosen = choose(mutants, args)
    args.workdir = os.path.abspath(args.workdir)
    args.results = os.path.abspath(args.results)
    os.makedirs(args.workdir, exist_ok=True)
    _warm_up()
    _set_subreaper()
    # Stopped with SIGTERM, the harness takes the test run's processes along.
    signal.signal(signal.SIGTERM, _stop)
    coverage_map = load_coverage_map(source_text, args.workdir, args.rebuild_map)
    selector = Selector(source_text, coverage_map)
    print(f"{len(chosen)} of {len(mutants)} mutants to run; results go to {args.results}",
          flush=True)
    _, seconds = run_mutants(chosen, selector, args, source_text)
    ran = {m.id for m in chosen}
    print_summary([r for r in read_results(args.results) if r["id"] in ran], seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
