"""Branch coverage of 3.11's SMTPChannel under the differential grammar.

Not part of the test run: a tool for whoever changes tests/_diffgrammar.py,
to see that the sessions still reach every branch of the oracle's channel.

    python tests/_diffcoverage.py [SESSIONS_PER_CONFIGURATION]

Needs hypothesis in the running Python and python3.11 with its stdlib smtpd.
Installs ``coverage`` for python3.11 into a private directory
($PYSMTPD_COV311, default /tmp/pysmtpd-cov311) if it is not there yet, runs
the oracle's server driver under coverage for every configuration of
test_differential.py with the known sessions and SESSIONS drawn ones
(default 300), and prints branch and line coverage of the lines of the
SMTPChannel class in the stdlib smtpd.py, with every missed branch.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import zlib

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _diffgrammar  # noqa: E402
import _diffharness as harness  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

COVERAGE_LIB = os.environ.get('PYSMTPD_COV311', '/tmp/pysmtpd-cov311')

# Run by python3.11: combine the data files, report the SMTPChannel lines.
_ANALYSE = r'''
import ast, json, os, sys
sys.path.insert(0, sys.argv[1])
import coverage
data_dir, smtpd_file = sys.argv[2], sys.argv[3]
cov = coverage.Coverage(data_file=os.path.join(data_dir, '.coverage'),
                        branch=True)
cov.combine(data_paths=[data_dir])
cov.save()
report = os.path.join(data_dir, 'report.json')
cov.json_report(morfs=[smtpd_file], outfile=report)
with open(report) as f:
    files = json.load(f)['files']
(result,) = files.values()
with open(smtpd_file) as f:
    tree = ast.parse(f.read())
(cls,) = [n for n in tree.body
          if isinstance(n, ast.ClassDef) and n.name == 'SMTPChannel']
inside = lambda line: cls.lineno <= line <= cls.end_lineno
print(json.dumps({
    'range': [cls.lineno, cls.end_lineno],
    'executed_lines': [l for l in result['executed_lines'] if inside(l)],
    'missing_lines': [l for l in result['missing_lines'] if inside(l)],
    'executed_branches': [b for b in result['executed_branches']
                          if inside(b[0])],
    'missing_branches': [b for b in result['missing_branches']
                         if inside(b[0])],
}))
'''


def ensure_coverage(python):
    """Install coverage for python3.11 into COVERAGE_LIB unless it is there."""
    probe = ('import sys; sys.path.insert(0, %r); import coverage'
             % COVERAGE_LIB)
    if subprocess.run([python, '-I', '-c', probe],
                      capture_output=True).returncode == 0:
        return
    subprocess.run([python, '-m', 'pip', 'install', '--quiet', '--target',
                    COVERAGE_LIB, 'coverage'], check=True)


def race_getpeername(port, attempts=50):
    """Connections reset right after connecting, so that the server may find
    the peer gone by the time the channel asks getpeername() (3.11's
    ENOTCONN branch).  Whether any attempt wins the race is up to the OS."""
    for _ in range(attempts):
        sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack('ii', 1, 0))
        sock.close()


def run_configuration(python, name, data_dir, count):
    config = harness.CONFIGS[name]
    upstream = None
    if config['cls'] == 'PureProxy':
        upstream = harness.UpstreamRecorder()
        config = dict(config, remote=upstream.address)
    server = harness.ServerProcess(
        'oracle', harness.oracle_command(python), config,
        extra_args=['--coverage-lib', COVERAGE_LIB, '--coverage-data',
                    os.path.join(data_dir, '.coverage.' + name)])
    try:
        for session in _diffgrammar.known_sessions(config):
            harness.run_session(server, session, upstream)

        @seed(zlib.crc32(name.encode('ascii')))
        @settings(derandomize=True, max_examples=count, deadline=None,
                  database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(session=_diffgrammar.sessions(config))
        def play(session):
            harness.run_session(server, session, upstream)

        play()
        if name == 'default':
            race_getpeername(server.port)
    finally:
        server.stop()
        if upstream is not None:
            upstream.close()


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 300
    python, smtpd_file = harness.find_oracle()
    ensure_coverage(python)
    with tempfile.TemporaryDirectory(prefix='diffcov-') as data_dir:
        for name in harness.CONFIGS:
            print('running %d sessions against %s' % (count, name),
                  file=sys.stderr)
            run_configuration(python, name, data_dir, count)
        out = subprocess.run(
            [python, '-I', '-c', _ANALYSE, COVERAGE_LIB, data_dir, smtpd_file],
            capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    with open(smtpd_file) as f:
        source = f.read().split('\n')
    first, last = result['range']
    executed, missing = result['executed_lines'], result['missing_lines']
    taken, missed = result['executed_branches'], result['missing_branches']
    print('SMTPChannel in %s, lines %d-%d' % (smtpd_file, first, last))
    print('lines:    %d of %d executed' % (len(executed),
                                           len(executed) + len(missing)))
    print('branches: %d of %d taken' % (len(taken), len(taken) + len(missed)))
    for start, end in missed:
        target = 'exit' if end < 0 else 'line %d' % end
        print('  missed branch %d -> %s: %s'
              % (start, target, source[start - 1].strip()))
    print('missed lines: %s' % (', '.join(map(str, missing)) or 'none'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
