"""Hostile input: pysmtpd must not crash, hang, leak descriptors or lose mail.

The first half proves the fixes of README's deviations table, one test per
way in which CPython 3.11's smtpd crashes, hangs or loses mail (the row id is
in each docstring); every one of those tests fails against 3.11.  The second
half throws hostile clients at a real server: random bytes, a 10 MB line,
NUL bytes, invalid UTF-8, commands after QUIT, resets and half-closes in the
middle of a command or of DATA, a client that sends one byte at a time,
one that never reads its replies, pipelined transactions, addresses that
work the email parser hard, and messages at and over the size limit.  After
every attack a normal client must still get its message acknowledged and
delivered.

Servers run in subprocesses, started from a scratch directory with the
smtpd under test first on PYTHONPATH: ``_hostile_server.py`` (an SMTPServer
that reports every process_message and handle_error call on its stdout) or
the CLI, ``python -m smtpd``.  Every test ends with the same health check:
every message acknowledged with 250 reached process_message, the server
printed no traceback, it holds no more descriptors once its clients have
gone than before the first arrived, and it exits 0 when asked to stop.

The machine may be busy, so nothing here waits a fixed time for the server
and nothing fails because the server was merely slow: a test waits, up to
TIMEOUT, for something it can see (a reply, a report from the server, a
count in /proc).  The server's reports arrive on a pipe, a little after the
replies they explain; a count of them is taken only once the server has
answered a SYNC request sent after the replies (see _hostile_server.py), so
that every report due is in and the count must be exact.

The two tests that open 1500 connections have ``heavy`` in their names, so
``-k "not heavy"`` leaves them out.  Only 127.0.0.1 is used.  Linux only:
descriptors are counted in /proc.
"""

import contextlib
import itertools
import json
import os
import random
import re
import resource
import selectors
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest

with warnings.catch_warnings():
    # 3.11's own smtpd warns on import; this module can run against it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import smtpd


HOST = "127.0.0.1"
# Bound for one reply, one connect, one delivery: generous for a loaded
# machine, short enough that a server which ignores a client fails quickly.
TIMEOUT = 5.0
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "_hostile_server.py")
GREETING_TAIL = (" %s\r\n" % smtpd.__version__).encode("ascii")
END_MESSAGE = "------------ END MESSAGE ------------"
MANY_CLIENTS = 1500

OK = b"250 OK\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BAD_SYNTAX = b"500 Error: bad syntax\r\n"
LINE_TOO_LONG = b"500 Error: line too long\r\n"
TOO_MUCH_DATA = b"552 Error: Too much mail data\r\n"
NEED_MAIL = b"503 Error: need MAIL command\r\n"
BAD_DATA_UTF8 = b"554 Error: message data is not valid UTF-8\r\n"


# -- waiting ------------------------------------------------------------------

def wait_until(predicate, timeout, interval=0.02):
    """Poll predicate until it is true or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


# -- server subprocesses ------------------------------------------------------

def child_env(unbuffered):
    """Environment for a server subprocess: the smtpd under test comes first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(smtpd.__file__))
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """A server subprocess whose stdout and stderr are collected as they come."""

    def __init__(self, argv, cwd, unbuffered=True, stop_signal=signal.SIGTERM,
                 control=False):
        self.stop_signal = stop_signal
        self.port = None
        self.baseline_fds = None
        # Tokens of the messages a client saw acknowledged with 250 after
        # the final dot: each of them must reach process_message.
        self.acked = []
        self.stdout_lines = []
        self.stderr_lines = []
        self._changed = threading.Condition()
        # SYNC requests sent on stdin (a _hostile_server.py reads them) and
        # the last one answered.
        self._syncs_sent = 0
        self._synced = 0
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=child_env(unbuffered),
            stdin=subprocess.PIPE if control else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines),
                             daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout_lines),
                                  (self.proc.stderr, self.stderr_lines))]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream, lines):
        for raw in stream:
            with self._changed:
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                if line.startswith("SYNCED "):
                    self._synced = int(line.split()[1])
                self._changed.notify_all()

    def wait_for(self, predicate, timeout):
        """Wait until predicate() holds for the output read so far."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def sync(self):
        """Wait until every event the server has reported so far is read.

        Everything the server reported before it read this request, and so
        every event behind a reply some client has already received, comes
        before the answer on its stdout.
        """
        self._syncs_sent += 1
        request = self._syncs_sent
        try:
            self.proc.stdin.write(b"SYNC %d\n" % request)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise AssertionError("the server has exited\n"
                                 + self.output()) from None
        answered = self.wait_for(lambda: self._synced >= request, TIMEOUT)
        assert answered, ("no answer to SYNC within %s s\n%s"
                          % (TIMEOUT, self.output()))

    @property
    def pid(self):
        return self.proc.pid

    def stdout_text(self):
        with self._changed:
            return "".join(self.stdout_lines)

    def events(self, kind):
        with self._changed:
            lines = list(self.stdout_lines)
        return [event for event in
                (json.loads(line[len("EVENT "):]) for line in lines
                 if line.startswith("EVENT "))
                if event["event"] == kind]

    def messages(self):
        """Every process_message call of a _hostile_server.py so far, in order.

        Exact: it syncs first, so a message acknowledged before the call is
        in the list, however late its report would otherwise arrive.
        """
        self.sync()
        return self.events("message")

    def bytes_read(self, port):
        """Bytes read from the client on port (server with --report-reads)."""
        return sum(event["size"] for event in self.events("read")
                   if event["peer"][1] == port)

    def wait_read(self, client):
        """Wait until the server has read everything client has sent."""
        port = client.sock.getsockname()[1]
        # A traceback ends the wait at once: the connection may be gone.
        self.wait_for(lambda: (self.bytes_read(port) >= client.sent
                               or self.events("error")), TIMEOUT)
        assert self.bytes_read(port) >= client.sent, (
            "server read %d of the %d bytes sent\n%s"
            % (self.bytes_read(port), client.sent, self.output()))

    def delivered(self, token):
        # The helper prints each message (JSON-escaped; tokens are plain
        # ASCII), DebuggingServer prints it as text: either way the token
        # shows up in stdout once process_message has run.  Before the
        # server has stopped, only a sync() makes "not delivered" final.
        return token in self.stdout_text()

    def wait_delivered(self, token, timeout=TIMEOUT):
        return self.wait_for(lambda: token in "".join(self.stdout_lines),
                             timeout)

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def tracebacks(self):
        """Every sign of an exception the server printed or reported."""
        found = [event["traceback"] for event in self.events("error")]
        with self._changed:
            found += [line for line in self.stderr_lines
                      if "Traceback (most recent call last)" in line]
            # asyncore's handle_error logs a compact traceback on stdout.
            found += [line for line in self.stdout_lines
                      if "uncaptured python exception" in line]
        return found

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Ask the server to stop as its user would; its exit status."""
        if self.alive():
            self.proc.send_signal(self.stop_signal)
        try:
            returncode = self.proc.wait(TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server did not stop within %s s of %s"
                                 % (TIMEOUT * 2, self.stop_signal.name)) from None
        self._join_readers()
        return returncode

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self._join_readers()

    def _join_readers(self):
        for reader in self._readers:
            reader.join(TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def output(self):
        """stdout and stderr, shortened, for assertion messages."""
        with self._changed:
            out, err = "".join(self.stdout_lines), "".join(self.stderr_lines)
        return "stdout: %r\nstderr: %r" % (out[-2000:], err[-2000:])


def assert_healthy(server):
    """What every test ends with, once all its clients have closed."""
    fds_settled = None
    if server.baseline_fds is not None and server.alive():
        fds_settled = wait_until(
            lambda: server.fd_count() <= server.baseline_fds, TIMEOUT)
        fds_now = server.fd_count()
    returncode = server.stop()
    # The server has exited and its output has been read to the end: what
    # is not in it now was never delivered.
    lost = [token for token in server.acked if not server.delivered(token)]
    assert server.tracebacks() == [], server.output()
    assert returncode == 0, server.output()
    assert lost == [], "acknowledged with 250 but never delivered"
    if fds_settled is not None:
        assert fds_settled, (
            "server holds %d descriptors after all clients closed, %d before "
            "the first connected" % (fds_now, server.baseline_fds))


def accept_queue_length(port):
    """Connections waiting to be accepted on HOST:port; None: no listener."""
    # In /proc/net/tcp, rx_queue of a listening socket (state 0A) is the
    # length of its accept queue.
    local = "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(HOST))[0],
                           port)
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[1] == local and fields[3] == "0A":
                return int(fields[4].partition(":")[2], 16)
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_listening(server, port):
    """Connect until the server greets, then QUIT; False if it exits first."""
    deadline = time.monotonic() + TIMEOUT * 2
    while server.alive() and time.monotonic() < deadline:
        try:
            client = Client(port)
        except ConnectionRefusedError:
            time.sleep(0.02)
            continue
        with client:
            assert client.command(b"QUIT") == b"221 Bye\r\n"
            # EOF means the server has closed its end: its descriptor count
            # is back to what it was before this client.
            client.read_to_eof()
        return True
    return False


@pytest.fixture
def hostile_server(tmp_path):
    """Start _hostile_server.py: start(decode_data=False, size=None, ...)."""
    started = []

    def start(decode_data=False, size=None, smtputf8=False,
              report_reads=False):
        argv = [sys.executable, HELPER]
        if decode_data:
            argv.append("--decode-data")
        if smtputf8:
            argv.append("--smtputf8")
        if size is not None:
            argv += ["--size", str(size)]
        if report_reads:
            argv.append("--report-reads")
        server = ServerProcess(argv, cwd=str(tmp_path), control=True)
        started.append(server)
        ready = server.wait_for(
            lambda: any(line.startswith("READY ")
                        for line in server.stdout_lines), TIMEOUT * 2)
        assert ready, "server did not start\n" + server.output()
        line = next(line for line in server.stdout_lines
                    if line.startswith("READY "))
        server.port = int(line.split()[1])
        server.baseline_fds = server.fd_count()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def cli_server(tmp_path):
    """Start ``python -m smtpd -n -c DebuggingServer [args] 127.0.0.1:PORT``."""
    started = []

    def start(*args, unbuffered=True):
        for _attempt in range(3):
            port = free_port()
            argv = [sys.executable, "-m", "smtpd", "-n", "-c",
                    "DebuggingServer", *args, "%s:%d" % (HOST, port)]
            server = ServerProcess(argv, cwd=str(tmp_path),
                                   unbuffered=unbuffered,
                                   stop_signal=signal.SIGINT)
            started.append(server)
            if wait_listening(server, port):
                server.port = port
                server.baseline_fds = server.fd_count()
                return server
            # Most likely another process took the port between
            # free_port() and the bind: try another one.
            server.kill()
        pytest.fail("the CLI did not start\n" + server.output())

    try:
        yield start
    finally:
        for server in started:
            server.kill()


# -- clients ------------------------------------------------------------------

class Client:
    """A raw SMTP client that reads whole replies, each within TIMEOUT."""

    def __init__(self, port, nodelay=False, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if rcvbuf:
            # Before connect, so that the window offered is small too.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            self.sock.connect((HOST, port))
        except BaseException:
            self.sock.close()
            raise
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        # For ServerProcess.wait_read().
        self.sent = 0
        self.greeting = self.reply()
        assert (self.greeting.startswith(b"220 ")
                and self.greeting.endswith(GREETING_TAIL)), self.greeting

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)
        self.sent += len(data)

    def reply(self):
        """One whole reply, all its lines, as the bytes received."""
        lines = []
        while True:
            while b"\r\n" not in self._buffer:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    raise AssertionError(
                        "no reply within %s s; so far %r"
                        % (TIMEOUT, b"".join(lines) + self._buffer)) from None
                if not chunk:
                    raise AssertionError(
                        "connection closed by the server; reply so far %r"
                        % (b"".join(lines) + self._buffer))
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def read_to_eof(self):
        """Everything the server still sends before it closes the connection."""
        data = self._buffer
        self._buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("server did not close the connection "
                                     "within %s s; got %r" % (TIMEOUT, data)) from None
            if not chunk:
                return data
            data += chunk

    def reset(self):
        """Abort the connection: close with SO_LINGER 0 sends a RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()


def start_data(client, mailfrom=b"sender@example.org",
               rcpttos=(b"rcpt@example.org",)):
    """MAIL, RCPT and DATA, each accepted."""
    assert client.command(b"MAIL FROM:<" + mailfrom + b">") == OK
    for rcpt in rcpttos:
        assert client.command(b"RCPT TO:<" + rcpt + b">") == OK
    assert client.command(b"DATA") == GO_AHEAD


def finish_data(client, server, content, token=None):
    """Send content and the final dot; note the token if the reply is 250."""
    client.send(content + b"\r\n.\r\n")
    reply = client.reply()
    if token is not None and reply == OK:
        server.acked.append(token)
    return reply


def new_token(label):
    return "%s-%s" % (label, uuid.uuid4().hex)


def probe(server, label="probe"):
    """A normal client (smtplib) sends a message: acknowledged and delivered."""
    token = new_token(label)
    message = ("From: probe@example.org\r\nTo: rcpt@example.org\r\n"
               "Subject: %s\r\nX-Token: %s\r\n\r\n"
               "A normal message after hostile input.\r\n"
               % (label, token)).encode("ascii")
    with smtplib.SMTP(HOST, server.port, local_hostname="probe.example.org",
                      timeout=TIMEOUT) as smtp:
        assert smtp.sendmail("probe@example.org", ["rcpt@example.org"],
                             message) == {}
    server.acked.append(token)
    assert server.wait_delivered(token), (
        "%s: acknowledged with 250 but not delivered\n%s"
        % (label, server.output()))
    return token


def open_greeted_clients(port, count, timeout, batch=None):
    """Open count connections, each of which must read its 220 greeting.

    All at once (a burst), or batch by batch with each batch greeted before
    the next connects.  Returns (sockets, seconds until the last greeting);
    the caller closes the sockets.
    """
    batch = batch or count
    sockets = []
    waiting = {}
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    deadline = started + timeout
    try:
        while len(sockets) < count:
            for _ in range(min(batch, count - len(sockets))):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setblocking(False)
                sock.connect_ex((HOST, port))
                waiting[sock] = b""
                selector.register(sock, selectors.EVENT_READ)
            while waiting and time.monotonic() < deadline:
                ready = selector.select(
                    min(0.5, max(0.0, deadline - time.monotonic())))
                for key, _ in ready:
                    sock = key.fileobj
                    try:
                        chunk = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError as err:
                        raise AssertionError(
                            "connection %d of %d failed before its greeting: "
                            "%s" % (sockets.index(sock) + 1, count, err)) from err
                    if not chunk:
                        raise AssertionError(
                            "connection %d of %d closed before its greeting"
                            % (sockets.index(sock) + 1, count))
                    waiting[sock] += chunk
                    if waiting[sock].endswith(b"\r\n"):
                        assert waiting[sock].startswith(b"220 "), waiting[sock]
                        selector.unregister(sock)
                        del waiting[sock]
            if waiting:
                raise AssertionError(
                    "%d of %d connections opened were not greeted within "
                    "%s s" % (len(waiting), len(sockets), timeout))
        return sockets, time.monotonic() - started
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        selector.close()


@pytest.fixture
def many_descriptors():
    """Raise the descriptor limit (children inherit it) for MANY_CLIENTS."""
    needed = MANY_CLIENTS + 200
    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = original
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            # Only root may raise the hard limit.
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target < needed:
        pytest.skip("needs %d descriptors, the hard limit is %d"
                    % (needed, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, original)


# == Part A: each way in which 3.11's smtpd fails ============================

def test_data_too_big_returns_to_command_state(hostile_server):
    """data-too-big: after 552 the session is in post-DATA command state."""
    server = hostile_server(size=1000)
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client, b"big@example.org", [b"big-rcpt@example.org"])
        oversized = b"Subject: too big\r\n\r\n" + b"X" * 600 + b"\r\n" + b"Y" * 600
        assert finish_data(client, server, oversized) == TOO_MUCH_DATA
        # The envelope is gone as after a completed DATA...
        assert client.command(b"RCPT TO:<late@example.org>") == NEED_MAIL
        # ...and the session answers commands instead of swallowing them.
        assert client.command(b"RSET") == OK
        token = new_token("after-552")
        start_data(client, b"next@example.org", [b"next-rcpt@example.org"])
        content = ("Subject: next\r\n\r\n%s" % token).encode("ascii")
        assert finish_data(client, server, content, token) == OK
        assert client.command(b"QUIT") == b"221 Bye\r\n"
    # The same in one send: the commands after the refused message are read
    # in command state even when they arrive with it.
    pipelined = new_token("pipelined-after-552")
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client, b"big@example.org", [b"big-rcpt@example.org"])
        client.send(oversized + b"\r\n.\r\nRSET\r\nMAIL FROM:<p@example.org>\r\n"
                    b"RCPT TO:<p-rcpt@example.org>\r\nDATA\r\n"
                    + pipelined.encode() + b"\r\n.\r\n")
        assert [client.reply() for _ in range(5)] == [
            TOO_MUCH_DATA, OK, OK, OK, GO_AHEAD]
        if client.reply() == OK:
            server.acked.append(pipelined)
    assert server.wait_delivered(token)
    assert server.wait_delivered(pipelined)
    messages = server.messages()
    assert [(m["mailfrom"], m["rcpttos"], m["data"]) for m in messages] == [
        ("next@example.org", ["next-rcpt@example.org"],
         "Subject: next\n\n%s" % token),
        ("p@example.org", ["p-rcpt@example.org"], pipelined)]
    assert_healthy(server)


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
def test_undecodable_command_is_bad_syntax(hostile_server, decode_data):
    """bad-utf8-command: 500 bad syntax (501 for VRFY), the session goes on."""
    server = hostile_server(decode_data=decode_data, report_reads=True)
    with Client(server.port) as client:
        for line in [b"\xff", b"NOOP \xc3\x28", b"HELO \xe2\x82",
                     b"MAIL FROM:<\xed\xa0\x80@example.org>",
                     "NÖÖP".encode("utf-8"), "\u00e9".encode("utf-8"),
                     "MAİL FROM:<a@example.org>".encode("utf-8")]:
            assert (line, client.command(line)) == (line, BAD_SYNTAX)
            assert client.command(b"NOOP") == OK
        # The 502 reply would echo "@ä", which has no ASCII form.
        assert client.command("VRFY @ä".encode("utf-8")) == (
            b"501 Syntax: VRFY <address>\r\n")
        assert client.command(b"NOOP") == OK
    with Client(server.port, nodelay=True) as client:
        # Over the limit, the server keeps only the first 514 bytes, which
        # end inside "ä": the line is refused for its length.
        line = "MAIL FROM:<{}>".format("ä" * 300).encode("utf-8")
        send_in_reads(server, client, line[:514], line[514:] + b"\r\n")
        assert client.reply() == LINE_TOO_LONG
        assert client.command(b"NOOP") == OK
    probe(server)
    assert_healthy(server)


BAD_ADDRESSES = [b"<", b"<a@", b"<a@example.org.>", b"@", b'"', b"<@a:"]


@pytest.mark.parametrize("greeting", [b"HELO", b"EHLO"])
def test_unparseable_address_is_syntax_error(hostile_server, greeting):
    """bad-address: MAIL/RCPT reply their 501, VRFY its 502; session lives."""
    server = hostile_server()
    extension = b" [SP <mail-parameters>]" if greeting == b"EHLO" else b""
    mail_error = b"501 Syntax: MAIL FROM: <address>" + extension + b"\r\n"
    rcpt_error = b"501 Syntax: RCPT TO: <address>" + extension + b"\r\n"
    with Client(server.port) as client:
        assert client.command(greeting + b" client.example.org").startswith(
            b"250")
        for address in BAD_ADDRESSES:
            line = b"MAIL FROM:" + address
            assert (line, client.command(line)) == (line, mail_error)
            assert client.command(b"NOOP") == OK
        assert client.command(b"MAIL FROM:<sender@example.org>") == OK
        for address in BAD_ADDRESSES:
            line = b"RCPT TO:" + address
            assert (line, client.command(line)) == (line, rcpt_error)
            assert client.command(b"NOOP") == OK
        assert client.command(b"VRFY <") == b"502 Could not VRFY <\r\n"
        # The good envelope survived all of that.
        token = new_token("after-bad-address")
        assert client.command(b"RCPT TO:<rcpt@example.org>") == OK
        assert client.command(b"DATA") == GO_AHEAD
        assert finish_data(client, server, token.encode(), token) == OK
    assert server.wait_delivered(token)
    assert [(m["mailfrom"], m["rcpttos"]) for m in server.messages()] == [
        ("sender@example.org", ["rcpt@example.org"])]
    assert_healthy(server)


def send_in_reads(server, client, *parts):
    """Send parts so that the server reads each one on its own.

    The server must have --report-reads: each part goes out once the
    server has read everything before it, so no read holds two parts.
    """
    for part in parts:
        client.send(part)
        server.wait_read(client)


def test_utf8_split_across_reads(hostile_server):
    """split-utf8: characters split between TCP reads arrive whole."""
    server = hostile_server(decode_data=True, report_reads=True)
    token = new_token("split")
    with Client(server.port, nodelay=True) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        # "ä" (2 bytes) split in a command line.
        send_in_reads(server, client, b"MAIL FROM:<j\xc3",
                      b"\xa4rg@example.org>\r\n")
        assert client.reply() == OK
        assert client.command(b"RCPT TO:<rcpt@example.org>") == OK
        assert client.command(b"DATA") == GO_AHEAD
        # "€" (3 bytes) and "😀" (4 bytes) split in the message text.
        send_in_reads(server, client,
                      ("Subject: %s\r\n\r\n" % token).encode()
                      + b"price \xe2", b"\x82\xac, mood \xf0\x9f", b"\x98",
                      b"\x80\r\n.\r\n")
        reply = client.reply()
        if reply == OK:
            server.acked.append(token)
        assert reply == OK
    assert server.wait_delivered(token)
    assert [(m["mailfrom"], m["kind"], m["data"])
            for m in server.messages()] == [
        ("järg@example.org", "str",
         "Subject: %s\n\nprice \u20ac, mood \U0001F600" % token)]
    assert_healthy(server)


def test_invalid_utf8_in_data_is_554(hostile_server):
    """split-utf8: undecodable DATA gets 554 and the post-DATA state."""
    server = hostile_server(decode_data=True)
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client, b"bad@example.org")
        assert finish_data(client, server,
                           b"Subject: bad\r\n\r\nnot \xff UTF-8") == (
            BAD_DATA_UTF8)
        assert client.command(b"RCPT TO:<late@example.org>") == NEED_MAIL
        token = new_token("after-554")
        start_data(client, b"good@example.org")
        assert finish_data(client, server, token.encode(), token) == OK
    assert server.wait_delivered(token)
    assert [(m["mailfrom"], m["data"]) for m in server.messages()] == [
        ("good@example.org", token)]
    assert_healthy(server)


def test_command_size_limits_are_per_channel(hostile_server):
    """per-channel-limits: a new client does not shrink another's limits."""
    assert isinstance(vars(smtpd.SMTPChannel)["command_size_limits"], dict)
    server = hostile_server()
    # 532 bytes: over the plain 512, within the 538 that EHLO with SIZE
    # allows for MAIL.
    long_mail = b"MAIL FROM:<" + b"a" * 508 + b"@example.org>"
    assert len(long_mail) == 532
    with Client(server.port) as first:
        assert first.command(b"EHLO first.example.org").endswith(
            b"250 HELP\r\n")
        # The second channel exists once its greeting has arrived.
        with Client(server.port) as second:
            assert first.command(long_mail) == OK
            assert second.command(b"NOOP " + b"x" * 508) == LINE_TOO_LONG
            assert second.command(b"NOOP") == OK
        assert first.command(b"RSET") == OK
    probe(server)
    assert_healthy(server)


def test_heavy_cli_serves_1500_clients(cli_server, many_descriptors):
    """cli-poll: the CLI serves more than select()'s 1024 descriptors."""
    server = cli_server()
    # Batches of 4, each greeted before the next, fit even 3.11's listen(5)
    # backlog: this test is about descriptor numbers, not the backlog.
    sockets, seconds = open_greeted_clients(server.port, MANY_CLIENTS,
                                            timeout=30, batch=4)
    print("%d clients greeted in batches in %.2f s" % (MANY_CLIENTS, seconds))
    try:
        token = probe(server, "after-1500")
        assert server.alive()
    finally:
        for sock in sockets:
            sock.close()
    assert "b'X-Token: %s'\n" % token in server.stdout_text()
    assert_healthy(server)


def test_accept_survives_descriptor_exhaustion(cli_server):
    """accept-emfile: EMFILE on accept does not close the listening socket."""
    server = cli_server()
    limit = 64
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (limit, hard))
    clients = []
    try:
        # One client at a time, each greeted, until the server holds every
        # descriptor it may have (one at a time, so the listen backlog is
        # never what limits them).
        while server.fd_count() < limit:
            assert len(clients) < limit, "server never ran out: %d fds" % (
                server.fd_count())
            clients.append(Client(server.port))
        greeted = clients[0]
        # Each of these makes the server's accept() fail with EMFILE.
        for _ in range(5):
            sock = socket.socket()
            clients.append(sock)
            sock.setblocking(False)
            sock.connect_ex((HOST, server.port))
        # Once they wait in the accept queue (or 3.11 has closed the
        # listening socket), the poll that wakes the server for this NOOP
        # finds the listening socket readable too, and the server tries to
        # accept before this test closes anything.
        def queued_or_closed():
            queued = accept_queue_length(server.port)
            return queued is None or queued >= 5

        assert wait_until(queued_or_closed, TIMEOUT), (
            "the 5 connections were not queued within %s s" % TIMEOUT)
        assert greeted.command(b"NOOP") == OK
    finally:
        for client in clients:
            client.close()
    # The clients that were never accepted are still queued; the server
    # must accept (and drop) them and then this one.
    token = probe(server, "after-emfile")
    assert server.alive()
    assert "b'X-Token: %s'\n" % token in server.stdout_text()
    assert_healthy(server)


def test_heavy_burst_of_1500_connects_greeted(hostile_server,
                                              many_descriptors):
    """backlog: 1500 simultaneous connects are all greeted within 15 s."""
    server = hostile_server()
    sockets, seconds = open_greeted_clients(server.port, MANY_CLIENTS,
                                            timeout=15)
    print("a burst of %d connects greeted in %.2f s" % (MANY_CLIENTS, seconds))
    for sock in sockets:
        sock.close()
    probe(server, "after-burst")
    assert_healthy(server)


def test_cli_debugging_output_is_flushed(cli_server):
    """debug-flush: each message reaches a stdout pipe while the server runs."""
    server = cli_server(unbuffered=False)
    token = new_token("flushed")
    with smtplib.SMTP(HOST, server.port, local_hostname="client.example.org",
                      timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@example.org", ["b@example.org"],
                      ("Subject: %s\r\n\r\nbody\r\n" % token).encode())
    printed = server.wait_for(
        lambda: END_MESSAGE + "\n" in "".join(server.stdout_lines), TIMEOUT)
    assert printed, "message not on the stdout pipe\n" + server.output()
    assert server.alive()
    stdout = server.stdout_text()
    assert "b'Subject: %s'\n" % token in stdout
    assert_healthy(server)


# == Part B: hostile clients against a real server ============================

_WORDS = [b"HELO x", b"EHLO x.example.org", b"MAIL FROM:<a@example.org>",
          b"MAIL FROM:<a@example.org> SMTPUTF8", "VRFY @ä".encode("utf-8"),
          b"RCPT TO:<b@example.org>", b"DATA", b"RSET", b"NOOP", b"VRFY",
          b"HELP MAIL", b"EXPN x", b".", b"..", b"MAIL FROM:<", b"RCPT TO:",
          b"MAIL FROM:<a@example.org> SIZE=99999999999 BODY=8BITMIME"]
_JUNK = [b"\x00", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
         "ä€😀".encode("utf-8"), b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b" ",
         b"<", b">", b"@", b'"', b":", b"\t", b"\x7f"]
_PRELUDES = [b"", b"EHLO x.example.org\r\n",
             b"HELO x\r\nMAIL FROM:<a@example.org>\r\n"
             b"RCPT TO:<b@example.org>\r\nDATA\r\n"]


_REPLY_CODE = re.compile(rb"[2-5][0-9][0-9][ -]")


def hostile_stream(rng):
    """Garbage with enough SMTP in it to reach every state (never QUIT)."""
    parts = [rng.choice(_PRELUDES)]
    for _ in range(rng.randrange(1, 40)):
        choice = rng.random()
        if choice < 0.3:
            parts.append(rng.choice(_WORDS) + b"\r\n")
        elif choice < 0.6:
            parts.append(rng.choice(_JUNK))
        else:
            parts.append(rng.randbytes(rng.randrange(1, 300)))
    return b"".join(parts)


def messages_acknowledged(replies):
    """How many "250 OK" replies in replies answer a message (follow a 354)."""
    lines = replies.split(b"\r\n")
    return sum(1 for before, after in itertools.pairwise(lines)
               if before.startswith(b"354 ") and after == b"250 OK")


@pytest.mark.parametrize("mode", ["bytes", "str", "smtputf8"])
def test_random_bytes(hostile_server, mode):
    """Seeded garbage: well-formed replies, no lost mail, the server stays up."""
    server = hostile_server(decode_data=mode == "str",
                            smtputf8=mode == "smtputf8", size=4096)
    rng = random.Random("hostile-" + mode)
    for attack in range(100):
        stream = hostile_stream(rng)
        earlier = len(server.messages())
        with Client(server.port) as client:
            client_port = client.sock.getsockname()[1]
            client.send(stream)
            if attack % 4 == 3:
                client.reset()
            else:
                client.sock.shutdown(socket.SHUT_WR)
                replies = client.read_to_eof()
        if attack % 4 != 3:
            # Whatever was asked, the answer is SMTP: no reset, no junk.
            assert replies == b"" or (
                _REPLY_CODE.match(replies) and replies.endswith(b"\r\n")
            ), (attack, stream, replies)
            # Every message acknowledged on this connection was delivered,
            # and no other.  The server has closed the connection, so all
            # it did for it is reported, and messages() syncs: all is read.
            delivered = [m for m in server.messages()[earlier:]
                         if m["peer"][1] == client_port]
            assert len(delivered) == messages_acknowledged(replies), (
                attack, stream, replies)
        probe(server, "after-random-%d" % attack)
    assert_healthy(server)


def _peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/%d/status" % pid)


def test_ten_megabyte_line_without_crlf(hostile_server):
    """10 MB without CRLF, as a command and as DATA: bounded memory, 5xx."""
    server = hostile_server(size=65536)
    chunk = b"X" * 65536
    peak_before = _peak_rss_kib(server.pid)
    with Client(server.port) as client:
        for _ in range(160):
            client.send(chunk)
        assert client.command(b"") == LINE_TOO_LONG
        assert client.command(b"NOOP") == OK
    probe(server, "after-long-command")
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client)
        for _ in range(160):
            client.send(chunk)
        assert finish_data(client, server, b"") == TOO_MUCH_DATA
    probe(server, "after-long-data")
    growth = _peak_rss_kib(server.pid) - peak_before
    print("peak RSS grew by %d KiB" % growth)
    # Buffering the line, even briefly, would add 10 MB to the peak.
    assert growth < 8 * 1024, "peak RSS grew by %d KiB" % growth
    assert not any("XXXX" in m["data"] for m in server.messages())
    assert_healthy(server)


def test_nul_bytes(hostile_server):
    """NUL bytes: 3.11's replies, and an 8-bit-clean delivery."""
    server = hostile_server()
    token = new_token("nul")
    with Client(server.port) as client:
        assert client.command(b"NOOP\x00") == (
            b'500 Error: command "NOOP\x00" not recognized\r\n')
        assert client.command(b"\x00") == (
            b'500 Error: command "\x00" not recognized\r\n')
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client)
        content = b"Subject: nul\r\n\r\n" + token.encode() + b"\x00\x00end"
        assert finish_data(client, server, content, token) == OK
    assert server.wait_delivered(token)
    assert server.messages()[-1]["data"] == (
        "Subject: nul\n\n%s\x00\x00end" % token)
    probe(server)
    assert_healthy(server)


def test_invalid_utf8_in_data_is_delivered_unchanged(hostile_server):
    """decode_data=False: DATA is bytes, whatever they are."""
    server = hostile_server()
    token = new_token("8bit")
    with Client(server.port) as client:
        assert client.command(b"EHLO client.example.org").endswith(
            b"250 HELP\r\n")
        start_data(client)
        content = (b"Subject: 8bit\r\n\r\n" + token.encode()
                   + b" \xff\xfe \xc3 \xed\xa0\x80")
        assert finish_data(client, server, content, token) == OK
    assert server.wait_delivered(token)
    message = server.messages()[-1]
    assert message["kind"] == "bytes"
    assert message["data"].encode("latin-1") == content.replace(b"\r\n", b"\n")
    probe(server)
    assert_healthy(server)


def test_commands_after_quit(hostile_server):
    """Commands pipelined after QUIT get no reply: 221, then the end."""
    server = hostile_server()
    with Client(server.port) as client:
        client.send(b"HELO client.example.org\r\nQUIT\r\nNOOP\r\n"
                    b"MAIL FROM:<late@example.org>\r\nRCPT TO:<r@example.org>"
                    b"\r\nDATA\r\nafter quit\r\n.\r\nNOOP\r\n")
        assert client.reply().startswith(b"250 ")
        assert client.read_to_eof() == b"221 Bye\r\n"
    probe(server)
    assert_healthy(server)


def test_reset_mid_command_and_mid_data(hostile_server):
    """A RST mid-command or mid-DATA: nothing delivered, nothing leaked."""
    server = hostile_server()
    with Client(server.port) as client:
        client.send(b"HELO client.example.org\r\nMAIL FROM:<half@exa")
        assert client.reply().startswith(b"250 ")
        client.reset()
    probe(server, "after-reset-in-command")
    lost = new_token("reset-in-data")
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client)
        client.send(("Subject: cut\r\n\r\n%s\r\nmore" % lost).encode())
        client.reset()
    probe(server, "after-reset-in-data")
    # The reset reached the server before the probe did, so the server has
    # dealt with it; the sync makes sure its reports, if any, are read.
    server.sync()
    assert not server.delivered(lost)
    assert_healthy(server)


def test_half_close_mid_command_and_mid_data(hostile_server):
    """shutdown(SHUT_WR) mid-command or mid-DATA: the server closes too."""
    server = hostile_server()
    with Client(server.port) as client:
        client.send(b"NOOP\r\nNOOP")
        client.sock.shutdown(socket.SHUT_WR)
        # The complete command is answered; the partial one is dropped.
        assert client.read_to_eof() == OK
    probe(server, "after-half-close-in-command")
    lost = new_token("half-close-in-data")
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client)
        client.send(("Subject: cut\r\n\r\n%s\r\n" % lost).encode())
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read_to_eof() == b""
    probe(server, "after-half-close-in-data")
    # The server closed that connection (read_to_eof saw it) before this.
    server.sync()
    assert not server.delivered(lost)
    # Half-closed right after the final dot: answered, delivered, closed.
    token = new_token("half-close-after-dot")
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        start_data(client)
        client.send(token.encode() + b"\r\n.\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        reply = client.read_to_eof()
        if reply == OK:
            server.acked.append(token)
        assert reply == OK
    assert server.wait_delivered(token)
    assert_healthy(server)


def test_slow_client_does_not_stall_others(hostile_server):
    """One byte at a time from one client; others are served in between.

    Each byte goes out once the server has read the one before, and between
    two bytes another client sends a whole message: all the while the server
    holds part of a command line, or part of the end of data, from the slow
    client.  A server that waited for the rest would fail the first probe.
    """
    server = hostile_server(report_reads=True)
    commands = b"HELO s\r\nMAIL FROM:<s@x.org>\r\nRCPT TO:<r@x.org>\r\n"
    token = new_token("slow")
    with Client(server.port, nodelay=True) as slow:
        for byte in commands:
            send_in_reads(server, slow, bytes([byte]))
            probe(server, "beside-slow-client")
        assert slow.reply().startswith(b"250 ")
        assert slow.reply() == OK
        assert slow.reply() == OK
        assert slow.command(b"DATA") == GO_AHEAD
        slow.send(token.encode())
        # The end of data, too, one byte at a time.
        for byte in b"\r\n.\r\n":
            probe(server, "beside-slow-client")
            send_in_reads(server, slow, bytes([byte]))
        reply = slow.reply()
        if reply == OK:
            server.acked.append(token)
        assert reply == OK
    assert server.wait_delivered(token)
    assert_healthy(server)


def test_pipelined_messages(hostile_server):
    """Three whole transactions in one send: each gets its own envelope."""
    server = hostile_server()
    tokens = [new_token("pipelined-%d" % i) for i in range(3)]
    stream = b"HELO client.example.org\r\n"
    for i, token in enumerate(tokens):
        stream += (b"MAIL FROM:<s%d@example.org>\r\nRCPT TO:<r%d@example.org>"
                   b"\r\nDATA\r\n.leading dot\r\n%s\r\n.\r\n"
                   % (i, i, token.encode()))
    with Client(server.port) as client:
        client.send(stream + b"QUIT\r\n")
        assert client.reply().startswith(b"250 ")
        for token in tokens:
            assert [client.reply() for _ in range(3)] == [OK, OK, GO_AHEAD]
            if client.reply() == OK:
                server.acked.append(token)
        assert client.read_to_eof() == b"221 Bye\r\n"
    for token in tokens:
        assert server.wait_delivered(token)
    assert [(m["mailfrom"], m["rcpttos"], m["data"])
            for m in server.messages()] == [
        ("s%d@example.org" % i, ["r%d@example.org" % i],
         "leading dot\n%s" % token) for i, token in enumerate(tokens)]
    assert_healthy(server)


def test_client_that_never_reads(hostile_server):
    """50,000 pipelined NOOPs whose replies are never read stall no one."""
    server = hostile_server(report_reads=True)
    # A small receive buffer, so the server's replies back up at once.
    with Client(server.port, rcvbuf=4096) as client:
        client.send(b"NOOP\r\n" * 50000)
        # Once the server has read them all, it holds 400,000 bytes of
        # replies that have nowhere to go: another client must be served
        # all the same (each step of the probe within TIMEOUT).
        server.wait_read(client)
        probe(server, "beside-non-reader")
        # Unread replies make the close a reset, as a crashed client's would.
        client.reset()
    probe(server, "after-non-reader")
    assert_healthy(server)


PATHOLOGICAL_ADDRESSES = {
    "nested comments": "(" * 490, "empty comments": "()" * 245,
    "escaped quotes": '"' + '\\"' * 240, "dotted local part": "a." * 245 + "@b",
    "source route": "<" + "@a," * 160 + "@a:b@c>", "angles": "<" * 490,
    "comments and spaces": " (a) " * 98, "dotted domain": "a@" + "b." * 240,
    "escaped comments": "(\\" * 240, "quoted comments": '("' * 240,
    "angle comments": "<(" * 240, "empty quotes": '""' * 245,
    "open quote": '"' + "a" * 480, "open literal": "a@[" + "a" * 480,
    "encoded word": "=?utf-8?q?" + "a" * 470 + "?=",
}


def _cpu_seconds(pid):
    """CPU time (user and system) the process has used so far."""
    with open("/proc/%d/stat" % pid) as stat:
        # Fields 14 and 15, utime and stime; the command name (field 2, in
        # parentheses) may hold spaces, the fields after it do not.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_pathological_addresses(hostile_server):
    """Addresses that work the email parser hard: prompt replies, no crash."""
    server = hostile_server()
    with Client(server.port) as client:
        assert client.command(b"HELO client.example.org").startswith(b"250 ")
        for name, address in PATHOLOGICAL_ADDRESSES.items():
            for command in (b"MAIL FROM:", b"RCPT TO:", b"VRFY "):
                if command == b"RCPT TO:":
                    assert client.command(b"MAIL FROM:<a@example.org>") == OK
                line = (command + address.encode("ascii"))[:512]
                # The server's CPU time, not the wall clock, which also
                # counts the time a busy machine gives to other processes.
                # (The reply itself must come within TIMEOUT.)
                cpu_before = _cpu_seconds(server.pid)
                reply = client.command(line)
                cpu_used = _cpu_seconds(server.pid) - cpu_before
                assert reply[:4] in (b"250 ", b"252 ", b"501 ", b"502 "), (
                    name, line, reply)
                assert cpu_used < 0.5, (name, line, cpu_used)
                assert client.command(b"RSET") == OK
    probe(server)
    assert_healthy(server)


def test_cli_debug_stream_survives_random_input(cli_server):
    """The CLI with -d (debug prints on stderr) under seeded garbage."""
    server = cli_server("-d")
    rng = random.Random("hostile-cli-debug")
    for attack in range(30):
        with Client(server.port) as client:
            client.send(hostile_stream(rng))
            client.sock.shutdown(socket.SHUT_WR)
            client.read_to_eof()
        probe(server, "after-debug-random-%d" % attack)
    assert_healthy(server)
    # Only now, with the server stopped, has all of its stderr been read.
    assert "Data:" in "".join(server.stderr_lines)


def _content_of_size(size, token):
    """Message text of exactly size bytes, with no line that starts with '.'."""
    head = ("Subject: %s\r\n\r\n" % token).encode("ascii")
    body = bytearray()
    while len(head) + len(body) < size:
        body += b"y" * 76 + b"\r\n"
    content = (head + body)[:size]
    # Never end inside a CRLF, which would change the terminator.
    if content.endswith(b"\r"):
        content = content[:-2] + b"zz"
    assert len(content) == size
    return bytes(content)


def test_messages_at_and_over_size_limit(hostile_server):
    """data_size_limit bytes are accepted; one byte more gets 552."""
    limit = 65536
    server = hostile_server(size=limit)
    accepted = {}
    for size in (limit - 1, limit, limit + 1, limit * 3):
        token = new_token("size-%d" % size)
        content = _content_of_size(size, token)
        with Client(server.port) as client:
            assert client.command(b"HELO client.example.org").startswith(
                b"250 ")
            start_data(client)
            reply = finish_data(client, server, content, token)
        assert (size, reply) == (size, OK if size <= limit else TOO_MUCH_DATA)
        if size <= limit:
            accepted[token] = content.replace(b"\r\n", b"\n")
        probe(server, "after-size-%d" % size)
    by_token = {m["data"].split("\n", 1)[0][len("Subject: "):]:
                m["data"].encode("latin-1")
                for m in server.messages() if m["data"].startswith("Subject")}
    sized = {token: data for token, data in by_token.items()
             if token.startswith("size-")}
    assert sized == accepted
    assert_healthy(server)


def test_cli_without_size_option_has_no_limit(cli_server):
    """As in 3.11, the CLI without -s offers no SIZE and takes a message
    larger than DATA_SIZE_DEFAULT, which its usage text calls the default."""
    server = cli_server()
    token = new_token("unlimited")
    line = b"x" * 998 + b"\r\n"
    body = line * (smtpd.DATA_SIZE_DEFAULT // len(line) + 1)
    with Client(server.port) as client:
        ehlo = client.command(b"EHLO client.example.org").split(b"\r\n")
        assert ehlo[0].startswith(b"250-")
        assert ehlo[1:] == [b"250-8BITMIME", b"250 HELP", b""]
        start_data(client)
        content = b"Subject: " + token.encode() + b"\r\n\r\n" + body
        assert len(content) > smtpd.DATA_SIZE_DEFAULT
        assert finish_data(client, server, content, token) == OK
        assert client.command(b"QUIT") == b"221 Bye\r\n"
    assert server.wait_delivered(token)
    assert_healthy(server)
