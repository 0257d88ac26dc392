#!/usr/bin/env python3
"""Check that smtpd.py is pysmtpd's own code, not CPython's.

    python3 tests/copycheck.py [CANDIDATE [REFERENCE]]

pysmtpd is MIT-licensed; CPython's smtpd.py is under the PSF licence, so
pysmtpd re-implements its behaviour without taking its code.  The interface
is shared (reply strings, the usage text, names and signatures), so single
lines in common are expected; a run of RUN_LIMIT or more consecutive code
lines that also stands, in the same order, in CPython's file is not.

Only code is compared: a line is compared by its tokens, so comments,
docstrings, blank lines, indentation and spacing don't count, and
re-indenting or re-commenting a copied block does not hide it.  Every
common run is found, not only the ones a diff would line up.

CANDIDATE defaults to smtpd.py beside this directory, REFERENCE to the
smtpd.py of the machine's ``python3.11``, found with -I so that a checkout's
own smtpd.py can't stand in for it.  Prints the longest run and every run of
RUN_LIMIT lines or more; exits 1 if there is one, 2 on a usage error.
"""

import io
import os
import subprocess
import sys
import tokenize

RUN_LIMIT = 6

_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
             tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def reference_path(python="python3.11"):
    """The smtpd.py that *python* imports in isolated mode."""
    return subprocess.run(
        [python, "-I", "-W", "ignore", "-c", "import smtpd; print(smtpd.__file__)"],
        capture_output=True, text=True, check=True).stdout.strip()


def code_lines(source):
    """Return [(line number, code)] for the lines of *source* that hold code.

    A line's code is its tokens, comments left out, joined by single spaces.
    """
    tokens_by_line = {}
    at_statement_start = True
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type in _NOT_CODE:
            if token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                at_statement_start = True
            continue
        # A string that is a whole statement is a docstring: documentation.
        is_docstring = token.type == tokenize.STRING and at_statement_start
        at_statement_start = False
        if not is_docstring:
            tokens_by_line.setdefault(token.start[0], []).append(token.string)
    return [(number, " ".join(tokens)) for number, tokens in sorted(tokens_by_line.items())]


def common_runs(candidate, reference):
    """Every maximal run of equal consecutive items, longest first, as
    (length, start in candidate, start in reference)."""
    runs = []
    # run_ending_at[j + 1]: length of the common run ending at candidate's
    # previous line and reference[j].
    run_ending_at = [0] * (len(reference) + 1)
    for i, line in enumerate(candidate):
        this_row = [0] * (len(reference) + 1)
        for j, other in enumerate(reference):
            if line != other:
                continue
            length = this_row[j + 1] = run_ending_at[j] + 1
            continues = (i + 1 < len(candidate) and j + 1 < len(reference)
                         and candidate[i + 1] == reference[j + 1])
            if not continues:
                runs.append((length, i + 1 - length, j + 1 - length))
        run_ending_at = this_row
    return sorted(runs, key=lambda run: -run[0])


def check(candidate_path, reference_path, out=sys.stdout):
    """Print the comparison; return the runs of RUN_LIMIT lines or more."""
    with open(candidate_path, "rb") as f:
        candidate = code_lines(f.read())
    with open(reference_path, "rb") as f:
        reference = code_lines(f.read())
    runs = common_runs([text for _, text in candidate], [text for _, text in reference])
    long_runs = [run for run in runs if run[0] >= RUN_LIMIT]
    for length, a, b in long_runs:
        print(f"  {length} lines in common: {candidate_path} line {candidate[a][0]}, "
              f"{reference_path} line {reference[b][0]}: {candidate[a][1][:60]!r}", file=out)
    longest = runs[0] if runs else (0, 0, 0)
    where = (f" ({candidate_path} line {candidate[longest[1]][0]})" if longest[0] else "")
    print(f"copycheck: longest run of code lines also in CPython's smtpd.py: "
          f"{longest[0]}{where}; limit {RUN_LIMIT - 1}; "
          f"{len(long_runs)} run(s) over it", file=out)
    return long_runs


def main(argv):
    if len(argv) > 3 or any(arg.startswith("-") for arg in argv[1:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    candidate = argv[1] if len(argv) > 1 else os.path.join(here, os.pardir, "smtpd.py")
    reference = argv[2] if len(argv) > 2 else reference_path()
    return 1 if check(os.path.normpath(candidate), reference) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
