#!/usr/bin/env python3
"""Check the smtpd type stubs (smtpd-stubs/__init__.pyi).

Usage: python tests/typing/run_typecheck.py [--installed] [--no-pyright]
           [--runtime DIR] [--python-version X.Y ...]

Checks, each a subprocess of this interpreter's tools:

  mypy       "mypy --strict" (mypy.ini here) on example.py and on the stub
             itself, for each --python-version (default: this Python's).
  pyright    the same in pyright's strict mode (needs node; --no-pyright
             skips it).
  stubtest   "python -m mypy.stubtest smtpd": the stub against the smtpd
             module this interpreter imports, with stubtest-allowlist.txt.
  names      every public name of that module is in the stub (stubtest
             looks only at __all__ and at what the stub declares).
  bases      on 3.12+, stubtest of the stub's private stand-ins for
             asyncore.dispatcher and asynchat.async_chat against pyasyncore
             and pyasynchat, the modules smtpd really builds on.
  example    runs example.py: the program that type-checks also works.

By default the stub is taken from the checkout (copied to a scratch
directory as smtpd.pyi, so that mypy and pyright report errors in it) and
the runtime smtpd from the checkout too (--runtime DIR names another
directory holding smtpd.py).  With --installed, as under tox, the installed
distribution is checked as a user gets it: its smtpd-stubs package must be
the checkout's stub, type checkers must find it with no help, and stubtest
compares it with the installed smtpd.py.

Exit status: 0 if every check passed, 1 otherwise.
"""

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STUB = os.path.join(ROOT, "smtpd-stubs", "__init__.pyi")
EXAMPLE = os.path.join(HERE, "example.py")
MYPY_INI = os.path.join(HERE, "mypy.ini")
ALLOWLIST = os.path.join(HERE, "stubtest-allowlist.txt")
BASES_ALLOWLIST = os.path.join(HERE, "stubtest-allowlist-bases.txt")

# Every subprocess is bounded; the slowest (a cold mypy run) takes ~30 s.
TIMEOUT = 600

# The stub's type-check-only stand-ins and the runtime classes they describe.
BASES = {"_Dispatcher": ("asyncore", "dispatcher"),
         "_AsyncChat": ("asynchat", "async_chat")}


class Checks:
    """Runs commands, prints their output, and counts the outcomes."""

    def __init__(self):
        self.passed = []
        self.failed = []

    def run(self, name, argv, *, env=None, cwd=None, expect_output=None,
            reject_output=()):
        """Run argv as check name; it passes if it exits 0, prints
        expect_output (when given) and none of reject_output."""
        print("\n=== %s\n$ %s" % (name, " ".join(argv)), flush=True)
        try:
            proc = subprocess.run(argv, env=env, cwd=cwd, timeout=TIMEOUT,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        except subprocess.TimeoutExpired:
            return self.record(name, False, "timed out after %d s" % TIMEOUT)
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            return self.record(name, False, "exit status %d" % proc.returncode)
        if expect_output is not None and expect_output not in proc.stdout:
            return self.record(name, False, "%r not in output" % expect_output)
        for text in reject_output:
            if text in proc.stdout:
                return self.record(name, False, "%r in output" % text)
        return self.record(name, True)

    def record(self, name, ok, why=""):
        (self.passed if ok else self.failed).append(name)
        print("--- %s: %s%s" % (name, "ok" if ok else "FAILED",
                                ", " + why if why else ""), flush=True)
        return ok


def base_stubs(stub_text):
    """Return {module: stub text} for asyncore and asynchat, made of the
    stub's private stand-ins for their classes, so stubtest can hold those
    declarations against pyasyncore and pyasynchat."""
    tree = ast.parse(stub_text)
    header = []
    classes = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            header.append(node)
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and ast.unparse(node.annotation) == "TypeAlias"):
            header.append(node)
        elif isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            for inner in node.body:
                if isinstance(inner, ast.ClassDef) and inner.name in BASES:
                    classes[inner.name] = inner
    if set(classes) != set(BASES):
        raise SystemExit("run_typecheck: the stub no longer defines %s under a "
                         "version check" % ", ".join(sorted(BASES)))
    renames = {private: public for private, (_, public) in BASES.items()}
    texts = {}
    for private, (module, public) in BASES.items():
        cls = classes[private]
        cls.name = public
        cls.decorator_list = []
        imports = []
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in renames:
                base_module = BASES[base.id][0]
                imports.append("from %s import %s" % (base_module, renames[base.id]))
                base.id = renames[base.id]
        lines = [ast.unparse(node) for node in header] + imports + [ast.unparse(cls)]
        texts[module] = "\n".join(lines) + "\n"
    return texts


def stub_names(stub_text):
    """The module-level names the stub defines (at any version)."""
    names = set()
    nodes = list(ast.parse(stub_text).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If):
            nodes.extend(node.body + node.orelse)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


# Prints smtpd's file and its own public names (not the modules and functions
# it imports).  stubtest checks only __all__ and the names the stub has, so it
# would not notice a public name the stub lacks.
RUNTIME_NAMES = """\
import inspect, json, smtpd
print(json.dumps({"file": smtpd.__file__, "names": sorted(
    name for name, value in vars(smtpd).items()
    if (not name.startswith('_') or name in ('__all__', '__version__'))
    and not inspect.ismodule(value)
    and getattr(value, '__module__', 'smtpd') == 'smtpd')}))
"""


def installed_stub():
    """Path of the installed smtpd-stubs/__init__.pyi, or None."""
    for key in ("purelib", "platlib"):
        path = os.path.join(sysconfig.get_paths()[key], "smtpd-stubs", "__init__.pyi")
        if os.path.exists(path):
            return path
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--installed", action="store_true",
                        help="check the installed distribution (as under tox)")
    parser.add_argument("--no-pyright", action="store_true", help="skip pyright")
    parser.add_argument("--runtime", metavar="DIR",
                        help="directory of the smtpd.py for stubtest and the "
                             "example (default: the checkout)")
    parser.add_argument("--python-version", metavar="X.Y", action="append",
                        help="target Python of mypy and pyright (repeatable; "
                             "default: this interpreter's)")
    args = parser.parse_args(argv)
    if args.installed and args.runtime:
        parser.error("--installed and --runtime exclude each other")
    this_version = "%d.%d" % sys.version_info[:2]
    versions = args.python_version or [this_version]
    checks = Checks()

    with open(STUB, encoding="utf-8") as f:
        stub_text = f.read()

    with tempfile.TemporaryDirectory(prefix="smtpd-typing-") as scratch:
        # The checkout's stub as a plain smtpd.pyi: on MYPYPATH and as
        # pyright's stubPath it beats any installed copy, and both tools
        # report errors in it (they stay quiet about installed stubs).
        stubs = os.path.join(scratch, "stubs")
        os.mkdir(stubs)
        shutil.copy(STUB, os.path.join(stubs, "smtpd.pyi"))
        work = os.path.join(scratch, "work")   # cwd: no smtpd.py in sight
        os.mkdir(work)

        base_env = dict(os.environ)
        for name in ("MYPYPATH", "PYTHONPATH"):
            base_env.pop(name, None)
        base_env["PYTHONDONTWRITEBYTECODE"] = "1"
        stub_env = dict(base_env, MYPYPATH=stubs)
        if args.installed:
            runtime_env = dict(base_env)
        else:
            runtime_env = dict(base_env, PYTHONPATH=args.runtime or ROOT)

        def mypy(name, files, env, version, cache):
            checks.run(name, [sys.executable, "-m", "mypy",
                              "--config-file", MYPY_INI,
                              "--cache-dir", os.path.join(scratch, cache),
                              "--python-version", version] + files,
                       env=env, cwd=work)

        def pyright(name, files, version, settings):
            config = os.path.join(scratch, name.split()[0])
            os.makedirs(config, exist_ok=True)
            settings = dict(settings, typeCheckingMode="strict")
            with open(os.path.join(config, "pyrightconfig.json"), "w") as f:
                json.dump(settings, f)
            checks.run(name, [sys.executable, "-m", "pyright",
                              "--project", config,
                              "--pythonpath", sys.executable,
                              "--pythonversion", version] + files,
                       env=base_env, cwd=work)

        stub_copy = os.path.join(stubs, "smtpd.pyi")
        for version in versions:
            mypy("mypy --strict, checkout stub, Python %s" % version,
                 [EXAMPLE, stub_copy], stub_env, version, "mypy-checkout")
            if not args.no_pyright:
                # Without an installed smtpd.py pyright would warn that the
                # stub has no source module; that is not the stub's fault.
                pyright("pyright-checkout strict, Python %s" % version,
                        [EXAMPLE, stub_copy], version,
                        {"stubPath": stubs, "reportMissingModuleSource": "none"})

        if args.installed:
            found = installed_stub()
            if found is None:
                checks.record("installed stubs", False,
                              "no smtpd-stubs/__init__.pyi in %s"
                              % sysconfig.get_paths()["purelib"])
            else:
                with open(found, encoding="utf-8") as f:
                    same = f.read() == stub_text
                checks.record("installed stubs", same,
                              found if same else found + " differs from the checkout")
            # Found by the tools with no help: otherwise mypy --strict would
            # call the installed smtpd.py untyped, and pyright would complain.
            for version in versions:
                mypy("mypy --strict, installed stubs, Python %s" % version,
                     [EXAMPLE], base_env, version, "mypy-installed")
                if not args.no_pyright:
                    pyright("pyright-installed strict, Python %s" % version,
                            [EXAMPLE], version,
                            {"reportMissingModuleSource": "error"})

        stubtest = [sys.executable, "-m", "mypy.stubtest",
                    "--mypy-config-file", MYPY_INI]
        # stubtest imports smtpd here; under --installed it reads the
        # installed stubs, else the checkout's.
        env = dict(runtime_env, MYPYPATH=stubs) if not args.installed else runtime_env
        checks.run("stubtest smtpd, Python %s" % this_version,
                   stubtest + ["--allowlist", ALLOWLIST, "smtpd"],
                   env=env, cwd=work)

        print("\n=== public names\n$ python -c <list smtpd's public names>", flush=True)
        proc = subprocess.run([sys.executable, "-c", RUNTIME_NAMES], env=runtime_env,
                              cwd=work, timeout=TIMEOUT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            print(proc.stdout, end="")
            checks.record("public names", False, "exit status %d" % proc.returncode)
        else:
            runtime = json.loads(proc.stdout)
            missing = sorted(set(runtime["names"]) - stub_names(stub_text))
            print("%s: %s" % (runtime["file"], " ".join(runtime["names"])))
            checks.record("public names", not missing,
                          "not in the stub: " + ", ".join(missing) if missing else "")

        if sys.version_info >= (3, 12):
            bases = os.path.join(scratch, "bases")
            os.mkdir(bases)
            for module, text in base_stubs(stub_text).items():
                with open(os.path.join(bases, module + ".pyi"), "w") as f:
                    f.write(text)
            checks.run("stubtest bases (pyasyncore, pyasynchat), Python %s" % this_version,
                       stubtest + ["--allowlist", BASES_ALLOWLIST,
                                   "--ignore-missing-stub", "asyncore", "asynchat"],
                       env=dict(base_env, MYPYPATH=bases), cwd=work)

        checks.run("example.py runs, Python %s" % this_version,
                   [sys.executable, "-W", "error", EXAMPLE],
                   env=runtime_env, cwd=work, expect_output="example: ok",
                   # e.g. the loop thread dying, or an unclosed socket
                   reject_output=("Traceback", "Exception ignored"))

    print("\ntypecheck: %d passed, %d failed" % (len(checks.passed), len(checks.failed)))
    for name in checks.failed:
        print("FAILED:", name)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
