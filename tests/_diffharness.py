"""Client side of the differential tests: servers, sessions and transcripts.

A ServerProcess runs tests/_diffserver.py under one interpreter and reads its
event stream.  run_session() plays one Session (a list of steps: send bytes,
half-close, close, reset) over a new TCP connection and returns a Transcript:
everything a user of that server can observe, as a flat list of tokens:

    ('step', i, what)                   the client's step i (same for both)
    ('reply', repr(line))               one reply line as written to the wire
    ('message', host, mailfrom, rcpttos, data, kwargs)   a process_message call
    ('message_done', result, stdout)    its return value and printed output
    ('printed', stdout)                 printed output of a call that raised
    ('relay', repr(bytes))              what a PureProxy sent its upstream
    ('crash', type, text)               an exception reached handle_error
    ('eof',)                            the server closed the connection

Each step is synchronised with the server, not with a timer: after sending,
the client waits for the server's ``progress`` event saying it has read every
byte sent so far and has no output queued (or for ``close``), then reads
exactly the bytes the server reports having written.  So TCP segmentation is
the session's own (one chunk is never merged with the next), and the same
session gives the same transcript every time.
"""

import json
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, '_diffserver.py')

#: Seconds one step may take before the server is declared stuck.
STEP_TIMEOUT = 10.0

#: Server configurations compared: _diffserver.py's config, less 'remote'.
CONFIGS = {
    'default': {'cls': 'SMTPServer', 'kwargs': {}},
    'decode_data': {'cls': 'SMTPServer', 'kwargs': {'decode_data': True}},
    'smtputf8': {'cls': 'SMTPServer', 'kwargs': {'enable_SMTPUTF8': True}},
    'limit_1000': {'cls': 'SMTPServer', 'kwargs': {'data_size_limit': 1000}},
    'limit_none': {'cls': 'SMTPServer', 'kwargs': {'data_size_limit': None}},
    'debugging': {'cls': 'DebuggingServer', 'kwargs': {}},
    'debugging_decoded': {'cls': 'DebuggingServer',
                          'kwargs': {'decode_data': True}},
    'proxy_bytes': {'cls': 'PureProxy', 'kwargs': {}},
    'proxy_decoded': {'cls': 'PureProxy', 'kwargs': {'decode_data': True}},
}

_ORACLE_PROBE = (
    "import os, sys, sysconfig, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "import smtpd\n"
    "print(os.path.abspath(smtpd.__file__))\n"
    "print(os.path.abspath(sysconfig.get_paths()['stdlib']))\n"
    "print('%d.%d' % sys.version_info[:2])\n")


class OracleMissing(Exception):
    """No python3.11 with its stdlib smtpd on this machine."""


class HarnessError(AssertionError):
    """The harness itself saw something impossible (not a behaviour diff)."""


def find_oracle():
    """(python3.11 path, its stdlib smtpd.py path), or raise OracleMissing.

    $PYSMTPD_ORACLE_PYTHON overrides the search.  The oracle runs isolated
    (-I: no PYTHONPATH, no script or current directory on sys.path) from an
    empty directory, so it cannot pick up this project's smtpd.py.
    """
    python = (os.environ.get('PYSMTPD_ORACLE_PYTHON')
              or shutil.which('python3.11'))
    if not python:
        raise OracleMissing('python3.11 not found (set PYSMTPD_ORACLE_PYTHON)')
    with tempfile.TemporaryDirectory() as empty:
        try:
            out = subprocess.run([python, '-I', '-c', _ORACLE_PROBE],
                                 cwd=empty, capture_output=True, text=True,
                                 timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OracleMissing('%s does not run: %s' % (python, exc)) from exc
    if out.returncode != 0:
        raise OracleMissing('%s has no smtpd module:\n%s'
                            % (python, out.stderr))
    smtpd_file, stdlib, version = out.stdout.split('\n')[:3]
    if version != '3.11' or os.path.dirname(smtpd_file) != stdlib:
        raise OracleMissing('%s is %s with smtpd at %s, not the 3.11 stdlib '
                            'one' % (python, version, smtpd_file))
    return python, smtpd_file


def oracle_command(python):
    """Argument prefix that runs the oracle interpreter isolated."""
    return [python, '-I']


def ours_command_env(smtpd_dir, safe_path=True):
    """(argument prefix, environment) that run this Python on our smtpd.

    safe_path adds -P: the script's directory (tests/ for the server driver)
    is not put on sys.path, so nothing in it can shadow a module.
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = smtpd_dir
    env.pop('PYTHONSTARTUP', None)
    return [sys.executable, '-P'] if safe_path else [sys.executable], env


class ServerProcess:
    """One _diffserver.py process and the stream of events it reports."""

    def __init__(self, label, command, config, env=None, extra_args=()):
        self.label = label
        self.config = config
        self._workdir = tempfile.TemporaryDirectory(prefix='diffsrv-')
        self.log_path = os.path.join(self._workdir.name, 'server.log')
        self._log = open(self.log_path, 'wb')
        self._events = queue.Queue()
        self.process = subprocess.Popen(
            [*command, DRIVER, json.dumps(config), *extra_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=self._workdir.name, env=env)
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()
        try:
            ready = self.next_event(60)
            if ready is None or ready['ev'] != 'ready':
                raise HarnessError('%s server did not start: %r\n%s'
                                   % (label, ready, self.log()))
        except BaseException:
            self.stop()
            raise
        self.port = ready['port']
        self.smtpd_file = ready['smtpd_file']
        self.ready = ready

    def _read_events(self):
        for line in self.process.stdout:
            self._events.put(json.loads(line))
        self._events.put(None)

    def next_event(self, timeout):
        """The next event, or None at end of stream; TimeoutError if none."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError('%s server sent no event for %.1fs'
                               % (self.label, timeout)) from None

    def log(self):
        """What the server printed besides events (asyncore's error log)."""
        self._log.flush()
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def stop(self):
        """End the server: close its stdin, then kill it if it lingers."""
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            self._reader.join(timeout=10)
            self.process.stdout.close()
            self._log.close()
            self._workdir.cleanup()


class UpstreamRecorder:
    """A minimal SMTP server that records what a PureProxy relays to it.

    It accepts every command, refuses recipients whose local part starts with
    "refuse", and keeps each connection's received bytes.  A connection is
    recorded before the 221 reply to QUIT goes out, so it is complete by the
    time the proxy's process_message returns.
    """

    def __init__(self):
        self._listener = socket.create_server(('127.0.0.1', 0))
        self._listener.settimeout(0.2)
        self.address = self._listener.getsockname()
        self._records = []
        self._lock = threading.Condition()
        self._active = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._active += 1
            try:
                with conn:
                    conn.settimeout(STEP_TIMEOUT)
                    self._converse(conn)
            except OSError:
                pass
            finally:
                with self._lock:
                    self._active -= 1
                    self._lock.notify_all()

    def _converse(self, conn):
        received = bytearray()
        record = {'received': received, 'rcpt_replies': []}
        buffer = b''
        in_data = False

        def reply(text):
            conn.sendall(text.encode('ascii') + b'\r\n')

        reply('220 upstream.test ESMTP recorder')
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
                buffer += chunk
                while True:
                    if in_data:
                        end = buffer.find(b'\r\n.\r\n')
                        if end < 0:
                            break
                        buffer = buffer[end + 5:]
                        in_data = False
                        reply('250 OK queued')
                        continue
                    end = buffer.find(b'\r\n')
                    if end < 0:
                        break
                    line, buffer = buffer[:end], buffer[end + 2:]
                    verb = line[:4].upper()
                    if verb == b'EHLO':
                        reply('250-upstream.test\r\n250-8BITMIME\r\n250 HELP')
                    elif verb == b'RCPT':
                        local = line.partition(b':')[2].strip().lstrip(b'<')
                        text = ('550 refused by recorder'
                                if local.lower().startswith(b'refuse')
                                else '250 OK')
                        record['rcpt_replies'].append(text)
                        reply(text)
                    elif verb == b'DATA':
                        # The body may already be in the buffer (pipelining).
                        in_data = True
                        reply('354 go ahead')
                    elif verb == b'QUIT':
                        self._add(record)
                        record = None
                        reply('221 bye')
                        return
                    else:
                        reply('250 OK')
        finally:
            if record is not None:
                self._add(record)

    def _add(self, record):
        with self._lock:
            self._records.append({
                'received': bytes(record['received']),
                'rcpt_replies': list(record['rcpt_replies'])})

    def take(self):
        """Records of the connections since the last take.

        Waits (boundedly) for connections still open to finish.
        """
        with self._lock:
            self._lock.wait_for(lambda: self._active == 0,
                                timeout=STEP_TIMEOUT)
            records, self._records = self._records, []
        return records

    def close(self):
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


class Session:
    """A client session: steps played over one new TCP connection.

    Steps are ('send', bytes), ('halfclose',) (shutdown for writing and read
    on), ('close',) and ('reset',) (close with SO_LINGER 0, so an RST).
    """

    def __init__(self, steps):
        self.steps = tuple(steps)

    def __repr__(self):
        steps = ''.join('    %r,\n' % (step,) for step in self.steps)
        return 'Session([\n%s])' % steps

    def sent_bytes(self):
        return b''.join(step[1] for step in self.steps if step[0] == 'send')


class Transcript:
    """What one server did in one session (see the module docstring)."""

    def __init__(self, label):
        self.label = label
        self.tokens = []
        self.crash_frames = {}      # token index -> frames of that crash
        self.relays = {}            # token index -> upstream record

    def add(self, *token):
        self.tokens.append(token)

    def render(self, mark=None, indent='    '):
        """The transcript, a token a line; >> marks the token at mark."""
        lines = []
        for index, token in enumerate(self.tokens):
            flag = '>>' if index == mark else '  '
            kind, *rest = token
            if kind == 'step':
                text = 'step %d: %s' % (rest[0], rest[1])
            elif kind == 'reply':
                text = '    <- %s' % rest[0]
            else:
                text = '    %s %s' % (kind, ' '.join(map(str, rest)))
            lines.append('%s%s%s' % (indent, flag, text))
        if mark is not None and mark >= len(self.tokens):
            lines.append('%s>>    (end of transcript)' % indent)
        return '\n'.join(lines)


def describe_step(step, width=300):
    """One line saying what a step does (long data cut to width)."""
    if step[0] != 'send':
        return step[0]
    text = repr(step[1])
    if len(text) > width:
        text = '%s... (%d bytes)' % (text[:width], len(step[1]))
    return 'send ' + text


class _Conversation:
    """One connection to one server, turned into a Transcript."""

    def __init__(self, server, transcript, upstream):
        self.server = server
        self.transcript = transcript
        self.upstream = upstream
        self.sock = socket.create_connection(('127.0.0.1', server.port),
                                             timeout=STEP_TIMEOUT)
        # Small chunks must leave at once, not wait for a delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.server_wrote = bytearray()
        self.received = bytearray()
        self.partial = b''
        self.after_crash = []
        self.server_closed = False
        self.client_closed = False
        self.eof_seen = False

    # -- server events ---------------------------------------------------

    def _reply_bytes(self, data):
        self.server_wrote += data
        lines = (self.partial + data).split(b'\r\n')
        self.partial = lines.pop()
        for line in lines:
            self.transcript.add('reply', repr(line + b'\r\n'))

    def _add_all(self, tokens):
        for token in tokens:
            if token[0] == 'relay':
                record = token[1]
                self.transcript.relays[len(self.transcript.tokens)] = record
                token = ('relay', repr(_smtplib_case(record['received'])))
            self.transcript.add(*token)

    def _flush_partial(self):
        if self.partial:
            self.transcript.add('reply', repr(self.partial))
            self.partial = b''

    def _event(self, ev):
        """Record one event; True when it completes the current step."""
        kind = ev['ev']
        t = self.transcript
        if kind == 'server_crash':
            t.add('server_crash', ev['type'], ev['text'])
            return False
        if ev.get('peer') != self.port:
            # Left over from an earlier session that timed out; not ours.
            return False
        if kind == 'send':
            self._reply_bytes(ev['data'].encode('latin-1'))
        elif kind == 'message':
            # The peer's port is this connection's (events are matched on
            # it above); the host is compared as it is.
            t.add('message', ev['host'], ev['mailfrom'], ev['rcpttos'],
                  ev['data'], ev['kwargs'])
        elif kind == 'message_done':
            outcome = []
            if ev['raised'] is None:
                outcome.append(('message_done', ev['result'],
                                repr(ev['stdout'])))
            elif ev['stdout']:
                outcome.append(('printed', repr(ev['stdout'])))
            if self.upstream is not None:
                outcome.extend(('relay', record)
                               for record in self.upstream.take())
            if ev['raised'] is None:
                self._add_all(outcome)
            else:
                # The exception is on its way to handle_error: show the
                # crash first, where the first difference then points.
                self.after_crash.extend(outcome)
        elif kind == 'crash':
            self._flush_partial()
            t.crash_frames[len(t.tokens)] = ev['frames']
            t.add('crash', ev['type'], ev['text'])
            self._add_all(self.after_crash)
            self.after_crash = []
        elif kind == 'close':
            self.server_closed = True
            return True
        elif kind in ('open', 'progress'):
            if ev['pending'] and not self.client_closed:
                # The server's output is queued: the socket buffers may be
                # full, and it can write no more until the client reads.
                self._drain()
            return ev.get('read', 0) == self.sent and not ev['pending']
        return False

    def _drain(self):
        """Read whatever has arrived, without waiting."""
        while not self.eof_seen:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b''
            if not data:
                self.eof_seen = True
                return
            self.received += data

    def _sync(self, until_close=False):
        """Consume events until the server has caught up with the client.

        With until_close, only the channel's close completes the step (the
        client has shut down its side, so the server must close).
        """
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            ev = self.server.next_event(max(0.01, deadline - time.monotonic()))
            if ev is None:
                raise HarnessError('%s server exited:\n%s'
                                   % (self.server.label, self.server.log()))
            if self._event(ev) and (self.server_closed or not until_close):
                break
        if not self.client_closed:
            self._read_wire()
        self._flush_partial()
        self._add_all(self.after_crash)
        self.after_crash = []
        if self.server_closed and not self.client_closed:
            self.transcript.add('eof')

    def _read_wire(self):
        """Read what the server wrote (and EOF if it closed); check it."""
        while len(self.received) < len(self.server_wrote) or (
                self.server_closed and not self.eof_seen):
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b''
            if not data:
                self.eof_seen = True
                break
            self.received += data
        if self.received != self.server_wrote:
            raise HarnessError(
                '%s: bytes on the wire %r differ from the bytes the server '
                'wrote %r'
                % (self.server.label, bytes(self.received),
                   bytes(self.server_wrote)))

    # -- client steps ----------------------------------------------------

    def play(self, session):
        self._sync()        # the greeting
        for index, step in enumerate(session.steps):
            if self.server_closed:
                break
            self.transcript.add('step', index, describe_step(step))
            kind = step[0]
            if kind == 'send':
                self.sock.sendall(step[1])
                self.sent += len(step[1])
            elif kind == 'halfclose':
                self.sock.shutdown(socket.SHUT_WR)
            else:
                if kind == 'reset':
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack('ii', 1, 0))
                self.sock.close()
                self.client_closed = True
            self._sync(until_close=kind != 'send')
        if not self.server_closed:
            # End every session with a closed channel, so that everything
            # the server does for this connection is in this transcript.
            self.sock.close()
            self.client_closed = True
            self._sync(until_close=True)

    def close(self):
        self.sock.close()


def run_session(server, session, upstream=None):
    """Play session against server and return its Transcript."""
    transcript = Transcript(server.label)
    conversation = _Conversation(server, transcript, upstream)
    try:
        conversation.play(session)
    except TimeoutError as exc:
        transcript.add('timeout', str(exc))
    finally:
        conversation.close()
    return transcript


def _smtplib_case(received):
    """What a PureProxy sent upstream, with smtplib's keyword case folded.

    The relay speaks through the running Python's smtplib, whose MAIL and
    RCPT commands read "mail FROM:" and "rcpt TO:" up to 3.13 and
    "mail from:", "rcpt to:" from 3.14 (not a pysmtpd difference; the README
    notes it).  Only the commands before DATA are folded, never the message.
    """
    head, data, message = received.partition(b'\r\ndata\r\n')
    head = re.sub(rb'(?im)^(mail from:|rcpt to:)',
                  lambda match: match.group(0).lower(), head)
    return head + data + message
