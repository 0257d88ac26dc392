#!/usr/bin/env python3
"""Build and check the sdist and the wheel (the tox env "dist").

Usage: python tests/check_dist.py [--build SOURCE] [--test-python PYTHON ...]
                                  DISTDIR

With --build, "python -m build --outdir DISTDIR SOURCE" runs first, its
output printed and kept for the check "build log"; without it, DISTDIR's
distributions are checked as they are and the build log is not.  Either way
DISTDIR must then hold exactly one sdist (.tar.gz) and one wheel (.whl).
Checks:

  build log no line of the build's output (stdout and stderr) matches
            "SetuptoolsDeprecationWarning", "DeprecationWarning" or
            "deprecated", case-insensitively: setuptools finds nothing
            deprecated in the packaging (such as a licence classifier).
  twine     "twine check --strict" on both: the metadata is valid and the
            long description renders.
  wheel     holds exactly smtpd.py, smtpd-stubs/__init__.pyi and its
            .dist-info (METADATA, WHEEL, RECORD, licenses/LICENSE and what
            setuptools always writes), nothing else; it is a pure
            py3-none-any wheel, RECORD lists every file, and smtpd.py and
            the stub are the sdist's.
  metadata  the wheel's METADATA: Metadata-Version 2.4, name pysmtpd, the
            version, summary, keywords and classifiers of setup.cfg (among
            them Python 3.12 to 3.15 and Typing :: Typed, and no "License ::"
            classifier), README.md as a markdown long description that
            renders, the licence as PEP 639 has it (License-Expression MIT,
            License-File LICENSE, no License field), the requirements on
            pyasyncore and pyasynchat for Python >= 3.12 and nothing else,
            setup.cfg's URLs (if any) and Requires-Python (if any); the
            sdist's PKG-INFO says the same.
  sdist     holds the module, the stub, the packaging files, README.md,
            LICENSE, CHANGELOG.md, tox.ini, .ci/run, .ci/get-python.sh,
            test_smtpd.py and every file of the checkout's tests/ and
            bench/, and nothing that .gitignore ignores (caches, byte
            code, build output).
  hosts     no file of the sdist names a package registry's or a download
            site's host (the project names packages by name, not by a
            registry's address): each hit is reported by file and line.
  install   for each --test-python: a fresh venv of that Python, the wheel
            installed into it with pip, and the sdist's test_smtpd.py (with
            the sdist's pyproject.toml, for the pytest settings) run by
            pytest from a scratch directory, against the installed smtpd.

Every subprocess has a timeout.  Exit status: 0 if every check passed,
1 otherwise.
"""

import argparse
import configparser
import email.parser
import email.policy
import fnmatch
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NAME = "pysmtpd"
STUB = "smtpd-stubs/__init__.pyi"
REQUIRED_CLASSIFIERS = [
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Programming Language :: Python :: 3.14",
    "Programming Language :: Python :: 3.15",
    "Typing :: Typed",
]
REQUIRES_DIST = [
    'pyasyncore; python_version >= "3.12"',
    'pyasynchat; python_version >= "3.12"',
]
# Files of the sdist besides those of tests/ and bench/.
SDIST_FILES = [
    "smtpd.py", STUB, "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in",
    "PKG-INFO", "README.md", "LICENSE", "CHANGELOG.md", "tox.ini", ".ci/run", ".ci/get-python.sh",
    "test_smtpd.py",
]
SDIST_TREES = ["tests", "bench"]

# The build's output must have no line that matches this.
DEPRECATION = re.compile(r"SetuptoolsDeprecationWarning|DeprecationWarning|deprecated",
                         re.IGNORECASE)


def _host(*labels, path=("", "")):
    """(name, pattern) for the host labels[0].labels[1]... and any subdomain
    of it, followed by path: (its name, a regular expression)."""
    host = r"\.".join(re.escape(label) for label in labels)
    pattern = r"(?<![\w.-])(?:[\w-]+\.)*%s(?![\w-])%s" % (host, path[1])
    return ".".join(labels) + path[0], re.compile(pattern, re.IGNORECASE)


# Package registries' and download sites' host names, which no file of the
# project may name: it names packages by name ("the PyPI package pyasyncore").
# Each is written here in parts, so that this file, which is in the sdist
# too, does not name them itself and trip its own check.  Documentation
# sites (PEPs, a project's docs) are not on the list.
FORBIDDEN_HOSTS = [
    _host("pypi", "org"),                    # and test., www.
    _host("pythonhosted", "org"),            # files.
    _host("bootstrap", "pypa", "io"),
    _host("python", "org", path=("/ftp", r"/ftp\b")),   # CPython's downloads
    _host("npmjs", "org"),                   # registry.
    _host("npmjs", "com"),
    _host("yarnpkg", "com"),
    _host("nodejs", "org"),
    _host("deb", "debian", "org"),
    _host("security", "debian", "org"),
    _host("ftp", "debian", "org"),
    _host("snapshot", "debian", "org"),
    _host("archive", "ubuntu", "com"),
    _host("security", "ubuntu", "com"),
    _host("crates", "io"),                   # static., index.
    _host("static", "rust-lang", "org"),
    _host("proxy", "golang", "org"),
    _host("rubygems", "org"),
    _host("nuget", "org"),
    _host("packagist", "org"),
    _host("repo1", "maven", "org"),
    _host("repo", "maven", "apache", "org"),
    _host("anaconda", "org"),                # conda.
    _host("repo", "anaconda", "com"),
    _host("githubusercontent", "com"),       # release assets, raw files
    _host("codeload", "github", "com"),
    _host("github", "com", path=("/OWNER/REPO/releases/download",
                                 r"/[\w.-]+/[\w.-]+/releases/download\b")),
]

VENV_TIMEOUT = 120
PIP_TIMEOUT = 300
PYTEST_TIMEOUT = 300
TWINE_TIMEOUT = 120
BUILD_TIMEOUT = 600


class Checks:
    """Runs named checks, prints what each found, and counts the outcomes."""

    def __init__(self):
        self.passed = []
        self.failed = []

    def check(self, name, function, *args):
        """Run function(*args), which returns a list of problems (empty if
        none) and may print; an exception is a problem too."""
        print("\n=== %s" % name, flush=True)
        try:
            problems = function(*args)
        except Exception as exc:   # report it, go on with the other checks
            problems = ["%s: %s" % (type(exc).__name__, exc)]
        for problem in problems:
            print("  problem:", problem)
        (self.failed if problems else self.passed).append(name)
        print("--- %s: %s" % (name, "FAILED" if problems else "ok"), flush=True)
        return not problems


def run(argv, timeout, **kwargs):
    """Run argv, print its command line and output; return (ok, output)."""
    print("$ %s" % " ".join(argv), flush=True)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, timeout=timeout,
                              **kwargs)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        print(output, end="", flush=True)
        return False, "timed out after %d s" % timeout
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        return False, "exit status %d" % proc.returncode
    return True, proc.stdout


def clean_env():
    """The environment for the venv's commands: nothing that redirects imports."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONSTARTUP",
                 "PYTHONUSERBASE", "VIRTUAL_ENV", "PYTHONWARNINGS"):
        env.pop(name, None)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def read_setup_cfg(sdist_files):
    """The sdist's setup.cfg (the checkout's may have changed since the build)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(sdist_files["setup.cfg"].decode("utf-8"))
    return parser


def cfg_list(parser, section, option):
    """A setup.cfg list: one item a line; keywords may be comma-separated."""
    text = parser.get(section, option, fallback="")
    items = [line.strip() for line in text.splitlines() if line.strip()]
    if option == "keywords":
        items = [word.strip() for line in items for word in line.split(",") if word.strip()]
    return items


def gitignore_patterns():
    """.gitignore's patterns as (pattern, only_directories) pairs."""
    patterns = []
    with open(os.path.join(ROOT, ".gitignore"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append((line.rstrip("/"), line.endswith("/")))
    return patterns


def ignored(path, patterns):
    """True if .gitignore ignores the relative path (simple patterns: each
    matches one path component; a directory pattern a directory's)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        is_dir = i < len(parts) - 1
        for pattern, only_directories in patterns:
            if (is_dir or not only_directories) and fnmatch.fnmatchcase(part, pattern):
                return True
    return False


def parse_metadata(data):
    """Core metadata (METADATA, PKG-INFO, WHEEL): UTF-8 headers and body."""
    return email.parser.Parser(policy=email.policy.compat32).parsestr(data.decode("utf-8"))


def normalized_requirement(text):
    from packaging.requirements import Requirement
    return str(Requirement(text))


# --- the checks ------------------------------------------------------------

def check_twine(sdist, wheel):
    ok, output = run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel],
                     TWINE_TIMEOUT)
    if not ok:
        return ["twine check: " + output]
    return []


def check_wheel(wheel, version, sdist_files):
    problems = []
    dist_info = "%s-%s.dist-info/" % (NAME, version)
    with zipfile.ZipFile(wheel) as zf:
        names = [name for name in zf.namelist() if not name.endswith("/")]
        print("wheel:", " ".join(names))
        payload = sorted(name for name in names if not name.startswith(dist_info))
        if payload != sorted(["smtpd.py", STUB]):
            problems.append("wheel holds %s, not exactly smtpd.py and %s"
                            % (payload, STUB))
        info = {name[len(dist_info):] for name in names if name.startswith(dist_info)}
        expected = {"METADATA", "WHEEL", "RECORD", "top_level.txt"}
        # PEP 639: the licence files go below .dist-info/licenses/.
        licence = {"licenses/LICENSE"} & info
        if not licence:
            problems.append("no licenses/LICENSE in %s" % dist_info)
        if not expected <= info:
            problems.append("%s lacks %s" % (dist_info, sorted(expected - info)))
        if info - expected - licence:
            problems.append("%s has unexpected files %s"
                            % (dist_info, sorted(info - expected - licence)))
        for name in sorted(licence):
            if zf.read(dist_info + name) != sdist_files["LICENSE"]:
                problems.append("%s%s is not the sdist's LICENSE" % (dist_info, name))

        wheel_meta = parse_metadata(zf.read(dist_info + "WHEEL"))
        if (wheel_meta.get("Root-Is-Purelib", "").lower() != "true"
                or wheel_meta.get_all("Tag") != ["py3-none-any"]):
            problems.append("not a pure py3-none-any wheel: Root-Is-Purelib %r, Tag %r"
                            % (wheel_meta.get("Root-Is-Purelib"), wheel_meta.get_all("Tag")))

        record = zf.read(dist_info + "RECORD").decode("utf-8")
        recorded = {line.split(",")[0] for line in record.splitlines() if line}
        if recorded != set(names):
            problems.append("RECORD and the wheel's files differ in %s"
                            % sorted(recorded ^ set(names)))

        for name in ("smtpd.py", STUB):
            if name in names and zf.read(name) != sdist_files.get(name):
                problems.append("the wheel's %s is not the sdist's" % name)
    return problems


def check_metadata(wheel, version, sdist_files):
    problems = []
    cfg = read_setup_cfg(sdist_files)
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read("%s-%s.dist-info/METADATA" % (NAME, version))
    meta = parse_metadata(raw)

    def expect(field, wanted):
        got = meta.get_all(field) or []
        if got == wanted:
            return
        if len(got) + len(wanted) > 2:   # a long list: say what differs
            problems.append("%s: missing %r, unexpected %r" % (
                field, [v for v in wanted if v not in got], [v for v in got if v not in wanted]))
        else:
            problems.append("%s is %r, expected %r" % (field, got, wanted))

    expect("Metadata-Version", ["2.4"])
    expect("Name", [NAME])
    expect("Version", [cfg.get("metadata", "version")])
    summary = cfg.get("metadata", "description")
    expect("Summary", [summary])
    if not summary.strip():
        problems.append("empty Summary")
    expect("Keywords", [",".join(cfg_list(cfg, "metadata", "keywords"))]
           if cfg.has_option("metadata", "keywords") else [])

    # The long description: README.md, as markdown, and it renders.
    content_type = (meta.get("Description-Content-Type") or "").split(";")[0].strip()
    if content_type != "text/markdown":
        problems.append("Description-Content-Type is %r, not text/markdown"
                        % meta.get("Description-Content-Type"))
    # (The sdist's README.md: the checkout's may have changed since the build.)
    readme = sdist_files["README.md"].decode("utf-8")
    description = meta.get_payload()
    if description.rstrip("\n") != readme.rstrip("\n"):
        problems.append("the long description is not README.md (%d vs %d characters)"
                        % (len(description), len(readme)))
    import readme_renderer.markdown
    if readme_renderer.markdown.render(description) is None:
        problems.append("the long description does not render as markdown")

    # The licence as PEP 639 has it: an SPDX expression and the file, and
    # neither the old License field nor a licence classifier.
    expect("License-Expression", ["MIT"])
    expect("License-File", ["LICENSE"])
    expect("License", [])

    classifiers = meta.get_all("Classifier") or []
    expect("Classifier", cfg_list(cfg, "metadata", "classifiers"))
    for classifier in classifiers:
        if classifier.startswith("License ::"):
            problems.append("licence classifier %r: PEP 639 replaced it with "
                            "License-Expression" % classifier)
    for classifier in REQUIRED_CLASSIFIERS:
        if classifier not in classifiers:
            problems.append("no classifier %r" % classifier)

    requires = sorted(normalized_requirement(r) for r in meta.get_all("Requires-Dist") or [])
    wanted = sorted(normalized_requirement(r) for r in REQUIRES_DIST)
    if requires != wanted:
        problems.append("Requires-Dist is %r, expected %r" % (requires, wanted))
    expect("Provides-Extra", [])
    python_requires = cfg.get("options", "python_requires", fallback=None)
    expect("Requires-Python", [python_requires.strip()] if python_requires else [])

    # URLs: whatever setup.cfg has, and nothing it hasn't.
    url = cfg.get("metadata", "url", fallback=None)
    expect("Home-page", [url.strip()] if url else [])
    urls = []
    for line in cfg_list(cfg, "metadata", "project_urls"):
        label, _, address = line.partition("=")
        urls.append("%s, %s" % (label.strip(), address.strip()))
    expect("Project-URL", urls)

    # The sdist's PKG-INFO says the same, field for field.
    pkg_info = parse_metadata(sdist_files["PKG-INFO"])
    if sorted(pkg_info.items()) != sorted(meta.items()):
        diff = sorted(set(pkg_info.items()) ^ set(meta.items()))
        problems.append("the sdist's PKG-INFO and the wheel's METADATA differ: %r" % diff)
    if pkg_info.get_payload() != meta.get_payload():
        problems.append("the sdist's PKG-INFO has another long description")
    for name, value in meta.items():
        if name not in ("Description",):
            print("  %s: %s" % (name, value))
    return problems


def check_sdist(names):
    problems = []
    patterns = gitignore_patterns()
    for name in SDIST_FILES:
        if name not in names:
            problems.append("the sdist lacks %s" % name)
    for tree in SDIST_TREES:
        checkout = []
        for dirpath, _dirnames, filenames in os.walk(os.path.join(ROOT, tree)):
            for filename in filenames:
                path = os.path.relpath(os.path.join(dirpath, filename), ROOT)
                path = path.replace(os.sep, "/")
                if not ignored(path, patterns):
                    checkout.append(path)
        if not checkout:
            problems.append("the checkout has no %s/" % tree)
        missing = sorted(set(checkout) - set(names))
        if missing:
            problems.append("the sdist lacks %s" % ", ".join(missing))
        print("  %s/: %d files" % (tree, len([n for n in names if n.startswith(tree + "/")])))
    # setuptools' own metadata directory is the one ignored thing that belongs.
    junk = sorted(name for name in names if ignored(name, patterns)
                  and not name.startswith(NAME + ".egg-info/"))
    if junk:
        problems.append("the sdist holds what .gitignore ignores: %s" % ", ".join(junk))
    return problems


def check_build_log(output):
    problems = []
    for number, line in enumerate(output.splitlines(), 1):
        if DEPRECATION.search(line):
            problems.append("build output line %d: %s" % (number, line.strip()))
    print("  %d lines of build output, %d about something deprecated"
          % (len(output.splitlines()), len(problems)))
    return problems


def check_hosts(sdist_files):
    problems = []
    for name, data in sorted(sdist_files.items()):
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for host, pattern in FORBIDDEN_HOSTS:
                if pattern.search(line):
                    problems.append("%s:%d names %s, a package registry's or download "
                                    "site's host (name the package, or say what the "
                                    "site is, instead): %s"
                                    % (name, number, host, line.strip()[:120]))
    print("  %d files, %d host names looked for" % (len(sdist_files), len(FORBIDDEN_HOSTS)))
    return problems


def check_install(python, wheel, sdist_files, scratch):
    """A fresh venv of python, the wheel in it, test_smtpd.py against it."""
    label = os.path.basename(python)
    base = os.path.join(scratch, label)
    venv = os.path.join(base, "venv")
    workdir = os.path.join(base, "run")   # no smtpd.py here: only the installed one
    os.makedirs(workdir)
    env = clean_env()
    ok, output = run([python, "-m", "venv", venv], VENV_TIMEOUT, env=env, cwd=base)
    if not ok:
        return ["%s -m venv: %s" % (python, output)]
    venv_python = os.path.join(venv, "bin", "python")
    ok, output = run([venv_python, "-m", "pip", "install", "--quiet", wheel, "pytest"],
                     PIP_TIMEOUT, env=env, cwd=base)
    if not ok:
        return ["pip install: " + output]

    for name in ("test_smtpd.py", "pyproject.toml"):
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(sdist_files[name])
    ok, output = run([venv_python, "-c",
                      "import smtpd, sysconfig; print(smtpd.__file__); "
                      "print(sysconfig.get_paths()['purelib'])"],
                     VENV_TIMEOUT, env=env, cwd=workdir)
    if not ok:
        return ["import smtpd: " + output]
    module, purelib = output.splitlines()[-2:]
    if os.path.dirname(os.path.realpath(module)) != os.path.realpath(purelib):
        return ["smtpd comes from %s, not from the venv's %s" % (module, purelib)]

    ok, output = run([venv_python, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                      "test_smtpd.py"], PYTEST_TIMEOUT, env=env, cwd=workdir)
    if not ok:
        return ["pytest test_smtpd.py: " + output]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("distdir", help="the directory python -m build wrote to "
                                         "(with --build: the one it writes to, empty or absent)")
    parser.add_argument("--build", metavar="SOURCE",
                        help="first run python -m build on the project in SOURCE, "
                             "writing to DISTDIR, and check its output")
    parser.add_argument("--test-python", metavar="PYTHON", action="append", default=[],
                        help="install the wheel into a venv of this Python and run "
                             "test_smtpd.py there (repeatable)")
    args = parser.parse_args(argv)
    checks = Checks()

    if args.build is not None:
        os.makedirs(args.distdir, exist_ok=True)
        if os.listdir(args.distdir):
            print("check_dist: %s is not empty; --build needs an empty one" % args.distdir)
            return 1
        # The output of both, stdout and stderr, is the build log.  clean_env()
        # drops PYTHONWARNINGS, which could silence the warnings looked for.
        print("\n=== python -m build", flush=True)
        ok, output = run([sys.executable, "-m", "build", "--outdir", args.distdir,
                          args.build], BUILD_TIMEOUT, env=clean_env())
        if not ok:
            print("check_dist: python -m build: %s" % output)
            return 1
        checks.check("build log", check_build_log, output)
    else:
        print("check_dist: no --build, so the build log is not checked")

    sdists = glob.glob(os.path.join(args.distdir, "*.tar.gz"))
    wheels = glob.glob(os.path.join(args.distdir, "*.whl"))
    others = set(os.listdir(args.distdir)) - {os.path.basename(p) for p in sdists + wheels}
    if len(sdists) != 1 or len(wheels) != 1 or others:
        print("check_dist: %s must hold one sdist and one wheel, not %s"
              % (args.distdir, sorted(os.listdir(args.distdir))))
        return 1
    sdist, wheel = sdists[0], wheels[0]
    sdist_name, wheel_name = os.path.basename(sdist), os.path.basename(wheel)
    version = sdist_name[len(NAME) + 1:-len(".tar.gz")]
    if (not sdist_name.startswith(NAME + "-")
            or wheel_name != "%s-%s-py3-none-any.whl" % (NAME, version)):
        print("check_dist: %s and %s are not %s-VERSION.tar.gz and "
              "%s-VERSION-py3-none-any.whl" % (sdist_name, wheel_name, NAME, NAME))
        return 1

    # The sdist's files, by their path below pysmtpd-VERSION/.
    prefix = "%s-%s/" % (NAME, version)
    sdist_files = {}
    with tarfile.open(sdist) as tf:
        for member in tf.getmembers():
            if member.name != prefix.rstrip("/") and not member.name.startswith(prefix):
                print("check_dist: %s is outside %s in the sdist" % (member.name, prefix))
                return 1
            if member.isfile():
                sdist_files[member.name[len(prefix):]] = tf.extractfile(member).read()
    for name in ("setup.cfg", "PKG-INFO", "README.md", "LICENSE", "smtpd.py",
                 "test_smtpd.py", "pyproject.toml"):
        if name not in sdist_files:
            print("check_dist: the sdist has no %s" % name)
            return 1

    checks.check("twine check --strict", check_twine, sdist, wheel)
    checks.check("wheel contents", check_wheel, wheel, version, sdist_files)
    checks.check("metadata", check_metadata, wheel, version, sdist_files)
    checks.check("sdist contents", check_sdist, sorted(sdist_files))
    checks.check("no registry or download host names", check_hosts, sdist_files)
    with tempfile.TemporaryDirectory(prefix="pysmtpd-dist-") as scratch:
        for python in args.test_python:
            found = shutil.which(python)
            if found is None:
                checks.check("install and test on %s" % python,
                             lambda python=python: ["%s not found" % python])
                continue
            checks.check("install and test on %s" % python, check_install,
                         found, wheel, sdist_files, scratch)

    print("\ncheck_dist: %d passed, %d failed" % (len(checks.passed), len(checks.failed)))
    for name in checks.failed:
        print("FAILED:", name)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
