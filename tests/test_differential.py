"""Differential tests: this project's smtpd against CPython 3.11's own smtpd.

The oracle is ``python3.11`` running the standard library's smtpd (isolated,
from an empty directory, and checked by its ``__file__``).  The module under
test is the smtpd this test imports, run under the current interpreter with
PYTHONPATH set to its directory.  Both get exactly the same input and
everything a user can observe is compared:

* SMTP sessions (test_sessions_match_oracle): one long-lived server process
  per implementation and configuration; many sessions, each a new TCP
  connection, drawn by hypothesis from the grammar in _diffgrammar.py.
  Compared: every reply byte, where the server closes the connection, every
  process_message call (peer host, mailfrom, rcpttos, data, kwargs, return
  value), what DebuggingServer prints, and what PureProxy relays upstream.
* The command line (test_cli_matches_oracle, test_cli_server_matches_oracle):
  ``python -m smtpd`` with help, version, bad options, sizes, host specs and
  classes, and as a running server: exit status, stdout, stderr and the wire.

test_pinned_sessions replays sessions that once showed a difference no table
row explained (each was a bug in smtpd.py, now fixed, or a row added since).

Differences are allowed only where README.md's deviations table has a row
for them; _diffclassify.py decides that, naming the row.  Anything else
fails with both transcripts and the session that produced them.

Number of sessions per configuration: $PYSMTPD_DIFF_SESSIONS (default 300);
$PYSMTPD_DIFF_SEED (default 0) picks another reproducible set of sessions.
Set PYSMTPD_DIFF_SELFTEST=1 to run the oracle against itself (a check of the
harness: it must find no difference at all).  Without python3.11 the tests
skip, except under CI (``CI`` set), where they fail.
"""

import datetime
import email.message
import email.utils
import logging.handlers
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, example, given, seed, settings

# The helpers live beside this file; make that work whatever the rootdir
# and import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _diffclassify  # noqa: E402
import _diffgrammar  # noqa: E402
import _diffharness as harness  # noqa: E402

with warnings.catch_warnings():
    # Under 3.11 without this project on the path, smtpd is the deprecated
    # stdlib module (the self-test).
    warnings.simplefilter('ignore', DeprecationWarning)
    import smtpd

SESSIONS = int(os.environ.get('PYSMTPD_DIFF_SESSIONS', '300'))
# Added to each configuration's hypothesis seed: another value, other
# sessions (for long runs); the same value, the same sessions.
SEED = int(os.environ.get('PYSMTPD_DIFF_SEED', '0'))
SELFTEST = os.environ.get('PYSMTPD_DIFF_SELFTEST') == '1'
SMTPD_FILE = os.path.realpath(smtpd.__file__)

CONFIGS = harness.CONFIGS


@pytest.fixture(scope='module')
def oracle():
    """(python3.11, its stdlib smtpd.py), or skip (fail under CI)."""
    try:
        return harness.find_oracle()
    except harness.OracleMissing as exc:
        message = 'differential tests need the python3.11 oracle: %s' % exc
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)


def _ours_command(oracle):
    """Command prefix and environment running the smtpd under test."""
    if SELFTEST:
        return harness.oracle_command(oracle[0]), None
    return harness.ours_command_env(os.path.dirname(SMTPD_FILE))


class ServerPair:
    """The oracle's and our server for one configuration, plus upstreams."""

    def __init__(self, name, oracle):
        self.name = name
        self.config = CONFIGS[name]
        self.oracle_upstream = self.ours_upstream = None
        self.oracle = self.ours = None
        self.verdicts = {}
        try:
            oracle_config, ours_config = self.config, self.config
            if self.config['cls'] == 'PureProxy':
                self.oracle_upstream = harness.UpstreamRecorder()
                self.ours_upstream = harness.UpstreamRecorder()
                oracle_config = dict(self.config,
                                     remote=self.oracle_upstream.address)
                ours_config = dict(self.config,
                                   remote=self.ours_upstream.address)
            self.oracle = harness.ServerProcess(
                'oracle', harness.oracle_command(oracle[0]), oracle_config)
            command, env = _ours_command(oracle)
            self.ours = harness.ServerProcess('ours', command, ours_config,
                                              env=env)
        except BaseException:
            self.close()
            raise
        assert self.oracle.smtpd_file == oracle[1]
        expected = oracle[1] if SELFTEST else SMTPD_FILE
        assert os.path.realpath(self.ours.smtpd_file) == expected

    def compare(self, session):
        """Play session on both servers; fail on an unexplained difference."""
        theirs = harness.run_session(self.oracle, session,
                                     self.oracle_upstream)
        mine = harness.run_session(self.ours, session, self.ours_upstream)
        verdict = _diffclassify.classify(self.config, theirs, mine)
        self.verdicts[verdict.label] = self.verdicts.get(verdict.label, 0) + 1
        if not verdict.allowed:
            raise AssertionError(self.explain(session, verdict, theirs, mine))

    def explain(self, session, verdict, theirs, mine):
        where = theirs.tokens[:verdict.index]
        steps = [t for t in where if t[0] == 'step']
        return '\n'.join([
            'configuration %s %r: unexplained difference (%s)'
            % (self.name, self.config, verdict.reason),
            '(PYSMTPD_DIFF_SEED=%d PYSMTPD_DIFF_SESSIONS=%d)'
            % (SEED, SESSIONS),
            'session (first difference at step %s):'
            % (steps[-1][1] if steps else 'connect'),
            *('    %d: %s' % (i, harness.describe_step(step))
              for i, step in enumerate(session.steps)),
            'oracle (python3.11 stdlib smtpd):', theirs.render(verdict.index),
            'ours (%s):' % self.ours.smtpd_file, mine.render(verdict.index),
            'ours server log (tail):', self.ours.log()[-3000:],
        ])

    def close(self):
        for part in (self.oracle, self.ours, self.oracle_upstream,
                     self.ours_upstream):
            if part is not None:
                if isinstance(part, harness.ServerProcess):
                    part.stop()
                else:
                    part.close()


@pytest.fixture(scope='module')
def server_pairs(oracle):
    """Each configuration's pair, started on first use, stopped at the end."""
    pairs = {}

    def get(name):
        if name not in pairs:
            pairs[name] = ServerPair(name, oracle)
        return pairs[name]

    yield get
    for pair in pairs.values():
        pair.close()


# Sessions that once showed a difference: each must now be identical, or
# differ only as a table row allows (the row is in the comment).
PINNED_SESSIONS = [
    # PureProxy with decode_data=True relays a str as 3.11 did, through
    # smtplib's line-end rules for str messages.
    ('proxy_decoded', _diffgrammar.line_steps(
        'EHLO x', 'MAIL FROM:<a@b>', 'RCPT TO:<c@d>', 'DATA',
        'Subject: s\r\n\r\nbody\r\n\r\n.', 'QUIT')),
    ('proxy_decoded', _diffgrammar.line_steps(
        'EHLO x', 'MAIL FROM:<a@b>', 'RCPT TO:<c@d>', 'DATA',
        'a\rb\r\r\nc\r\n.', 'QUIT')),
    # Row proxy-ascii.
    ('proxy_decoded', _diffgrammar.line_steps(
        'EHLO x', 'MAIL FROM:<\u00fc@b>', 'RCPT TO:<c@d>', 'DATA',
        'hello\r\n.', 'QUIT')),
    # Row size-param.
    ('default', _diffgrammar.line_steps('EHLO x', 'MAIL FROM:<a@b> SIZE')),
    ('default', _diffgrammar.line_steps('EHLO x',
                                        'MAIL FROM:<a@b> SIZE=\u00b2')),
    # Without a size limit 3.11 never calls int() on SIZE: 250 OK.
    ('limit_none', _diffgrammar.line_steps('EHLO x',
                                           'MAIL FROM:<a@b> SIZE=\u00b2')),
]


@pytest.mark.parametrize(
    'name,steps', [pytest.param(name, steps, id='%s-%d' % (name, index))
                   for index, (name, steps) in enumerate(PINNED_SESSIONS)])
def test_pinned_sessions(name, steps, server_pairs):
    """Sessions that once differed from 3.11 match it, or as a row allows."""
    server_pairs(name).compare(harness.Session(steps))


@pytest.mark.parametrize('name', list(CONFIGS))
def test_sessions_match_oracle(name, server_pairs):
    """Hypothesis-drawn sessions get the same observable behaviour as 3.11."""
    pair = server_pairs(name)
    pair.verdicts.clear()

    # Reproducible (the same sessions every run), but different sessions
    # for each configuration.
    @seed(zlib.crc32(name.encode('ascii')) + SEED)
    @settings(derandomize=True, max_examples=SESSIONS, deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(session=_diffgrammar.sessions(CONFIGS[name]))
    def sessions_agree(session):
        pair.compare(session)

    for known in reversed(_diffgrammar.known_sessions(CONFIGS[name])):
        sessions_agree = example(session=known)(sessions_agree)
    sessions_agree()
    # Shown with -rP / -s: how many sessions agreed, and which rows
    # explained the others.
    counts = sorted(pair.verdicts.items())
    print('%s: %s' % (name, ', '.join('%s=%d' % item for item in counts)))


# ---------------------------------------------------------------------------
# The command line

PROBE_MODULE = '''\
"""A --class for the CLI tests: prints what the CLI passes, then exits."""
class Probe:
    def __init__(self, *args, **kwargs):
        print('args=%r' % (args,))
        print('kwargs=%r' % (kwargs,))
        raise SystemExit(0)
'''

# The usage text names sys.argv[0], which differs between the two.
PROGRAM = '<program>'

# Cases that end by themselves: (id, argv).  PORT is replaced by a port.
CLI_EXITING = [
    ('help', ['-h']), ('help-long', ['--help']),
    ('version', ['-V']), ('version-long', ['--version']),
    ('version-then-help', ['-V', '-h']), ('help-then-version', ['-h', '-V']),
    ('bad-option', ['-x']), ('bad-long-option', ['--bogus']),
    ('class-needs-argument', ['-c']), ('size-needs-argument', ['--size']),
    ('ambiguous-long', ['--s=1']), ('combined-short', ['-nV']),
    ('attached-size', ['-s1000x']), ('option-after-spec', ['h:1', '-n']),
    ('double-dash', ['--', '-h']),
    ('size-word', ['-s', 'abc']), ('size-empty', ['-s', '']),
    ('size-float', ['-s', '1.5']), ('size-suffix', ['--size=12k']),
    ('size-negative-bad-spec', ['-s', '-5', 'nocolon']),
    ('local-no-colon', ['nocolon']), ('local-no-port', ['host:']),
    ('local-bad-port', ['host:port']), ('remote-no-colon', ['h:1', 'x']),
    ('remote-bad-port', ['h:1', 'h:x']), ('too-many', ['a:1', 'b:2', 'c:3']),
    ('unknown-class', ['-n', '-c', 'NoSuchClass', '127.0.0.1:PORT']),
    ('unknown-module', ['-n', '-c', 'no_such_module.Cls', '127.0.0.1:PORT']),
    ('not-a-server', ['-n', '-c', 'Devnull', '127.0.0.1:PORT']),
    ('proxy-smtputf8', ['-n', '-u', '127.0.0.1:PORT']),
    ('port-out-of-range', ['-n', '127.0.0.1:70000']),
    ('probe-defaults', ['-n', '--class=diffcli_probe.Probe']),
    ('probe-specs', ['-n', '--class', 'diffcli_probe.Probe', 'a:1', ':2']),
    ('probe-size-utf8', ['-n', '-s', '1000', '-u', '-c',
                         'diffcli_probe.Probe', 'h:1']),
    ('probe-size-zero', ['-n', '--size=0', '--smtputf8', '--debug',
                         '--class=diffcli_probe.Probe', 'h:1', 'r:2']),
]

_EHLO_SESSION = [b'EHLO cli.example', b'NOOP', b'QUIT']
_MESSAGE_SESSION = [
    b'EHLO cli.example', b'MAIL FROM:<a@example.org> SIZE=50',
    b'RCPT TO:<b@example.org>', b'DATA',
    b'Subject: cli\r\n\r\nbody\r\n..dot\r\n.', b'QUIT']
_UTF8_SESSION = [
    b'EHLO cli.example', b'MAIL FROM:<\xc3\xbc@example.org> SMTPUTF8',
    b'RCPT TO:<b@example.org>', b'DATA', b'\xc3\xbc\r\n.', b'QUIT']

# Cases that serve until SIGINT: (id, argv, client lines).  UPSTREAM is the
# address of a recording upstream.
CLI_SERVING = [
    ('debugging', ['-n', '-c', 'DebuggingServer', '127.0.0.1:PORT'],
     _MESSAGE_SESSION),
    ('debugging-debug', ['-n', '-d', '-c', 'DebuggingServer',
                         '127.0.0.1:PORT'], _MESSAGE_SESSION),
    ('module-class-utf8-size', ['-n', '-u', '-s', '1000',
                                '--class=smtpd.DebuggingServer',
                                '127.0.0.1:PORT'], _UTF8_SESSION),
    ('proxy-debug', ['-n', '-d', '127.0.0.1:PORT', 'UPSTREAM'],
     _EHLO_SESSION),
    ('setuid', ['-c', 'DebuggingServer', '127.0.0.1:PORT'], _EHLO_SESSION),
]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _cli_command(oracle, which):
    """(argv prefix, env) running ``-m smtpd`` for 'oracle' or 'ours'."""
    if which == 'oracle' or SELFTEST:
        # -E -s: no PYTHONPATH, no user site.  The working directory is on
        # sys.path (for the probe module) but holds no smtpd.py.
        return [oracle[0], '-E', '-s', '-m', 'smtpd'], None
    # The working directory must stay on sys.path, for the probe module.
    command, env = harness.ours_command_env(os.path.dirname(SMTPD_FILE),
                                            safe_path=False)
    return command + ['-m', 'smtpd'], env


def _substitute(argv, port, upstream):
    return [arg.replace('PORT', str(port)).replace('UPSTREAM', upstream)
            for arg in argv]


def _normalise(text, program, ports):
    """Blank out what legitimately differs between two runs of the CLI."""
    text = text.replace(program, PROGRAM)
    for port, name in ports.items():
        text = re.sub(r'\b%d\b' % port, name, text)
    text = re.sub(r'started at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}',
                  'started at <ctime>', text)
    # Tracebacks: code lines and line numbers are the implementation's own;
    # what the user learns is the exception on the last line.
    text = re.sub(r'Traceback \(most recent call last\):\n(?:[ \t].*\n)+',
                  'Traceback (most recent call last):\n  <frames>\n', text)
    return text


# Row import-warning: 3.11's ``-m smtpd`` warns that asyncore and asynchat
# (which smtpd imports) are deprecated; pysmtpd is silent.
_IMPORT_WARNING = re.compile(
    r'^\S+:\d+: DeprecationWarning: The (?:smtpd|asyncore|asynchat) module is '
    r'deprecated[^\n]*\n(?:  [^\n]*\n)?', re.MULTILINE)


def _allow_cli_rows(argv, theirs, mine):
    """Apply the table rows covering CLI differences; return the rows used."""
    used = []
    stripped = _IMPORT_WARNING.sub('', theirs['stderr'])
    if stripped != theirs['stderr']:
        theirs['stderr'] = stripped
        used.append('import-warning')
        if SELFTEST or sys.version_info < (3, 12):
            # Before 3.12 asyncore and asynchat are the stdlib's, which
            # warn whoever imports them (pysmtpd targets 3.12+).
            mine['stderr'] = _IMPORT_WARNING.sub('', mine['stderr'])
    if _GETOPT_CHOICES.search(mine['stderr']):
        # Not a row: getopt's messages are the running Python's, and from
        # 3.14 on it lists the candidates of an ambiguous long option (the
        # README says so below the table).
        mine['stderr'] = _GETOPT_CHOICES.sub('', mine['stderr'])
        used.append('getopt of Python %d.%d' % sys.version_info[:2])
    return used


# What 3.14's getopt adds to "option --s not a unique prefix".
_GETOPT_CHOICES = re.compile(r'(?<=not a unique prefix); possible options: '
                             r'[^\n]*')


def _talk(port, lines):
    """Send each line (CRLF added), read its complete reply; the transcript."""
    out = []
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        reader = sock.makefile('rb')
        out.append(repr(reader.readline()))
        for line in lines:
            sock.sendall(line + b'\r\n')
            while True:
                reply = reader.readline()
                out.append(repr(reply))
                if len(reply) < 4 or reply[3:4] != b'-':
                    break
        client_ports = [sock.getsockname()[1]]
        out.append(repr(reader.read()))     # EOF after QUIT
    return '\n'.join(out) + '\n', client_ports


def _wait_listening(port, process, deadline):
    """Connect until the server answers; the probe's local port, or None."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            probe = socket.create_connection(('127.0.0.1', port), timeout=1)
        except OSError:
            time.sleep(0.02)
            continue
        with probe:
            # Wait for the greeting, so that the server has finished with
            # this connection's start (its -d output) before the session.
            probe.recv(1024)
            return probe.getsockname()[1]
    return None


def _run_cli(oracle, which, argv, lines=None, upstream=None):
    """Run one CLI case; return {'rc', 'stdout', 'stderr', 'wire'}.

    lines are the client's command lines, or a function that talks to the
    server's port itself and returns (transcript, client ports).
    """
    command, env = _cli_command(oracle, which)
    with tempfile.TemporaryDirectory(prefix='diffcli-') as cwd:
        os.chmod(cwd, 0o755)    # readable after setuid(nobody)
        with open(os.path.join(cwd, 'diffcli_probe.py'), 'w') as f:
            f.write(PROBE_MODULE)
        port = _free_port()
        ports = {port: '<PORT>'}
        upstream_spec = ''
        if upstream is not None:
            upstream_spec = '%s:%d' % upstream.address
            ports[upstream.address[1]] = '<UPSTREAM>'
        process = subprocess.Popen(
            command + _substitute(argv, port, upstream_spec), cwd=cwd,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        wire = ''
        try:
            if lines is not None:
                probe = _wait_listening(port, process, time.monotonic() + 30)
                if probe is None:
                    process.kill()
                    out, err = process.communicate(timeout=10)
                    raise AssertionError('%s CLI did not listen: %s%s'
                                         % (which, out, err))
                ports[probe] = '<PROBE>'
                talk = lines if callable(lines) else (
                    lambda port: _talk(port, lines))
                wire, client_ports = talk(port)
                for client_port in client_ports:
                    ports[client_port] = '<CLIENT>'
                process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    program = SMTPD_FILE if which == 'ours' and not SELFTEST else oracle[1]
    return {'rc': process.returncode,
            'stdout': _normalise(out.decode('utf-8', 'replace'), program,
                                 ports),
            'stderr': _normalise(err.decode('utf-8', 'replace'), program,
                                 ports),
            'wire': _normalise(wire, program, ports)}


def _compare_cli(oracle, argv, lines=None, proxy=False):
    upstreams = [harness.UpstreamRecorder(), harness.UpstreamRecorder()] \
        if proxy else [None, None]
    try:
        theirs = _run_cli(oracle, 'oracle', argv, lines, upstreams[0])
        mine = _run_cli(oracle, 'ours', argv, lines, upstreams[1])
    finally:
        for upstream in upstreams:
            if upstream is not None:
                upstream.close()
    rows = _allow_cli_rows(argv, theirs, mine)
    for key in ('rc', 'wire', 'stdout', 'stderr'):
        assert mine[key] == theirs[key], (
            'python -m smtpd %s: %s differs (rows applied: %s)\n'
            '--- oracle ---\n%s\n--- ours ---\n%s'
            % (' '.join(argv), key, rows or 'none', theirs[key], mine[key]))
    return theirs


@pytest.mark.parametrize('argv', [
    pytest.param(argv, id=case_id)
    for case_id, argv in CLI_EXITING])
def test_cli_matches_oracle(oracle, argv):
    """python -m smtpd exits with the same status and output as 3.11."""
    result = _compare_cli(oracle, argv)
    # Guard against a vacuous pass: every one of these cases says something.
    assert result['stdout'] or result['stderr']


@pytest.mark.parametrize('argv,lines', [case[1:] for case in CLI_SERVING],
                         ids=[case[0] for case in CLI_SERVING])
def test_cli_server_matches_oracle(oracle, argv, lines):
    """python -m smtpd serving: same wire, output and exit status as 3.11."""
    if '-n' not in argv and os.geteuid() != 0:
        pytest.skip('setuid(nobody) succeeds only as root')
    result = _compare_cli(oracle, argv, lines, proxy='UPSTREAM' in argv)
    assert result['wire'].startswith("b'220 ")
    assert result['rc'] == 0


# -- what DebuggingServer prints for real clients -----------------------------
#
# The command line's headline use, ``python -m smtpd -n -c DebuggingServer``,
# fed by the clients people point at it.  ESMTP clients send MAIL parameters
# only for what the server offers (SIZE above all), and DebuggingServer prints
# them: its output is 3.11's only if its EHLO reply is too.

_FIXED_DATE = datetime.datetime(2026, 1, 2, 3, 4, 5,
                                tzinfo=datetime.timezone.utc)


def _plain_message(smtp):
    return smtp.sendmail('alice@example.org', ['bob@example.org'],
                         b'Subject: plain\r\n\r\nHello, Bob.\r\n')


def _message_with_attachment(smtp):
    message = email.message.EmailMessage()
    message['From'] = 'alice@example.org'
    message['To'] = 'bob@example.org, carol@example.org'
    message['Subject'] = 'report'
    message.set_content('The report is attached.\n')
    message.add_attachment(bytes(range(256)), maintype='application',
                           subtype='octet-stream', filename='report.bin')
    # Fixed, so that both servers get the same bytes.
    message.set_boundary('pysmtpd-boundary')
    return smtp.send_message(message)


def _eight_bit_message(smtp):
    return smtp.sendmail('alice@example.org', ['bob@example.org'],
                         'Subject: caf\xe9\r\n\r\nCaf\xe9 cr\xe8me.\r\n'
                         .encode('utf-8'), mail_options=['BODY=8BITMIME'])


class _RaisingSMTPHandler(logging.handlers.SMTPHandler):
    def handleError(self, record):
        raise   # what emit() caught: a failure must fail the test


def _logging_handler(port, monkeypatch):
    # SMTPHandler dates its message with the local time; the same date for
    # both servers.
    monkeypatch.setattr(email.utils, 'localtime', lambda *args: _FIXED_DATE)
    handler = _RaisingSMTPHandler(('127.0.0.1', port), 'app@example.org',
                                  ['ops@example.org'], 'Error in app',
                                  timeout=10)
    record = logging.LogRecord('app', logging.ERROR, __file__, 1,
                               'disk %s is full', ('/var',), None)
    handler.emit(record)
    return ''


_SMTPLIB_CLIENTS = {
    'sendmail': _plain_message,
    'send_message-attachment': _message_with_attachment,
    'sendmail-8bitmime': _eight_bit_message,
}


def _smtplib_talker(send):
    def talk(port):
        with smtplib.SMTP('127.0.0.1', port, local_hostname='cli.example',
                          timeout=10) as smtp:
            client_port = smtp.sock.getsockname()[1]
            refused = send(smtp)
            transcript = 'EHLO: %r\nrefused: %r\n' % (smtp.ehlo_resp, refused)
        return transcript, [client_port]
    return talk


@pytest.mark.parametrize('client', [*_SMTPLIB_CLIENTS, 'SMTPHandler'])
def test_cli_debugging_server_prints_what_311_printed(oracle, client,
                                                      monkeypatch):
    """python -m smtpd -n -c DebuggingServer: the same EHLO reply and the same
    printout, byte for byte, as 3.11's for real clients' messages."""
    if client == 'SMTPHandler':
        def talk(port):
            return _logging_handler(port, monkeypatch), []
    else:
        talk = _smtplib_talker(_SMTPLIB_CLIENTS[client])
    argv = ['-n', '-c', 'DebuggingServer', '127.0.0.1:PORT']
    result = _compare_cli(oracle, argv, talk)
    assert result['stdout'].count('---------- MESSAGE FOLLOWS ----------') == 1
    # No client sent SIZE: the server did not offer it.
    assert 'SIZE' not in result['stdout'] + result['wire']
