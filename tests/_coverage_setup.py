"""Prepare tox's coverage environment; run by its commands_pre.

Usage: python tests/_coverage_setup.py

* The directory of $COVERAGE_FILE is emptied of an earlier run's data and
  made with mode 1777: the CLI, run as root without -n, becomes `nobody`
  before it serves, and writes its coverage data there when it exits.  So
  every directory above it must let others through (/tmp does); if one does
  not, this stops with the reason, rather than the gate failing later for a
  reason it could not name.
* Subprocesses are measured by coverage's own start-up hook: the coverage
  wheel puts a .pth file into site-packages that calls
  coverage.process_startup() in every Python process of this environment,
  which starts measuring when COVERAGE_PROCESS_START names a config file.
  Checked here, so that a coverage release without it fails loudly.
"""

import glob
import os
import shutil
import stat
import sys
import sysconfig


def fresh_data_dir(data_dir):
    """Make data_dir empty and writable by every user."""
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir)
    os.chmod(data_dir, 0o1777)
    path = data_dir
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & stat.S_IXOTH:
            sys.exit(f"{path} is closed to other users: a server that has "
                     f"become nobody could not save its coverage data in "
                     f"{data_dir}")


def find_startup_hooks():
    site_packages = sysconfig.get_paths()["purelib"]
    hooks = []
    for path in sorted(glob.glob(os.path.join(site_packages, "*.pth"))):
        with open(path, encoding="utf-8") as f:
            if "process_startup" in f.read():
                hooks.append(path)
    if not hooks:
        sys.exit(f"no .pth file in {site_packages} calls "
                 f"coverage.process_startup()")
    return hooks


def main():
    data_dir = os.path.dirname(os.path.realpath(os.environ["COVERAGE_FILE"]))
    config = os.environ["COVERAGE_PROCESS_START"]
    if not os.path.isfile(config):
        sys.exit(f"COVERAGE_PROCESS_START={config} is not a file")
    fresh_data_dir(data_dir)
    print("coverage data:", data_dir)
    print("subprocess hook:", ", ".join(find_startup_hooks()))


if __name__ == "__main__":
    main()
