"""End-to-end tests for smtpd.PureProxy, the CLI's default relay class.

A real client (smtplib, or a raw socket where the exact reply bytes matter)
talks to a PureProxy on 127.0.0.1, and the proxy relays to a real upstream
SMTP server that the test starts on 127.0.0.1:

* "smtpd": an SMTPServer subclass of the module under test, recording what
  process_message() gets, in its own asyncore loop thread and socket map
  (and a variant of it that hangs up on QUIT instead of replying);
* "aiosmtpd": an independent implementation (aiosmtpd's Controller), recording
  the envelope and the message bytes exactly as they crossed the wire;
* scripted raw-socket upstreams for the failures no real server does on
  request: never greeting, hanging after the message, a 554 greeting,
  hanging up mid-transaction.

What is checked is the "proxy-*" rows of the project's deviations table:
messages (with either decode_data setting, 8-bit ones too) arrive byte-exact
with ``X-Peer: 127.0.0.1`` inserted at the end of the headers; when no
recipient was accepted upstream the client is told the upstream's code and
text, or 451 when the upstream could not be reached or timed out; a hung
upstream is bounded by PureProxy.relay_timeout.  CPython 3.11's PureProxy
fails these (it crashes on bytes and on 8-bit data, and answers 250 OK for
mail it lost); the _deliver() return values and the SMTPUTF8 refusal are the
same as in 3.11.
"""

import collections
import io
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

with warnings.catch_warnings():
    # CPython 3.11's own smtpd/asyncore warn on import; this project's do not.
    warnings.simplefilter('ignore', DeprecationWarning)
    import asyncore

    import smtpd

try:
    with warnings.catch_warnings():
        # aiosmtpd 1.4 imports typing.ByteString, deprecated since 3.14.
        warnings.simplefilter('ignore', DeprecationWarning)
        import aiosmtpd.controller
except ImportError:
    aiosmtpd = None


HOST = '127.0.0.1'
# Every blocking operation in this module gives up after this many seconds,
# so that a broken proxy fails a test instead of hanging the run.
TIMEOUT = 10.0
SENDER = 'sender@example.org'
RECIPIENTS = ['one@example.org', 'two@example.net']
UNAVAILABLE = b'Requested action aborted: upstream server unavailable'


Received = collections.namedtuple(
    'Received', 'mail_from rcpt_tos content mail_options')
Received.__doc__ = """One message as an upstream server got it."""


def _body_options(mail_options):
    """mail_options without SIZE=, which smtplib adds by itself."""
    return [o.upper() for o in mail_options
            if not o.upper().startswith('SIZE=')]


def _reserved_dead_port():
    """Return a socket bound to a port that refuses connections.

    The socket is bound but not listening, so the port stays ours (no
    other test can start listening on it) and every connect is refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    return sock


def _free_port():
    """Return a port that was free a moment ago (for the CLI's arguments)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class _LoopThread:
    """Runs asyncore.loop over one socket map in a daemon thread."""

    def __init__(self, socket_map):
        self.map = socket_map
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stopping.is_set():
            if self.map:
                asyncore.loop(timeout=0.02, use_poll=True, map=self.map,
                              count=1)
            else:
                self._stopping.wait(0.02)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._thread.join(TIMEOUT)
        if self._thread.is_alive():
            raise AssertionError('asyncore loop thread did not stop')
        asyncore.close_all(self.map)


# ---------------------------------------------------------------- upstreams

class _SmtpdUpstreamChannel(smtpd.SMTPChannel):
    """Refuses MAIL and RCPT when the test tells its server to."""

    def smtp_MAIL(self, arg):
        reply = self.smtp_server.mail_reply
        if reply and self.seen_greeting:
            self.push(reply)
        else:
            super().smtp_MAIL(arg)

    def smtp_RCPT(self, arg):
        match = re.search(r'<([^>]*)>', arg or '')
        reply = match and self.smtp_server.rcpt_replies.get(match.group(1))
        if reply:
            self.push(reply)
        else:
            super().smtp_RCPT(arg)


class _SmtpdUpstreamServer(smtpd.SMTPServer):
    """An SMTPServer of the module under test that records every message."""

    channel_class = _SmtpdUpstreamChannel

    def __init__(self, socket_map):
        super().__init__((HOST, 0), None, map=socket_map)
        self.messages = []
        self.mail_reply = None
        self.rcpt_replies = {}
        self.data_reply = None

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.messages.append(Received(mailfrom, list(rcpttos), data,
                                      list(kwargs['mail_options'])))
        return self.data_reply


class _HangUpOnQuitChannel(_SmtpdUpstreamChannel):
    """Closes the connection on QUIT instead of replying 221."""

    def smtp_QUIT(self, arg):
        self.close()


class _HangUpOnQuitServer(_SmtpdUpstreamServer):
    channel_class = _HangUpOnQuitChannel


class SmtpdUpstream:
    """Upstream "smtpd": this project's SMTPServer in its own loop thread."""

    def __init__(self, server_class=_SmtpdUpstreamServer):
        self._loop = _LoopThread({})
        self._server = server_class(self._loop.map)
        self.address = self._server.socket.getsockname()[:2]
        self._loop.start()

    def stop(self):
        self._loop.stop()

    @property
    def messages(self):
        return self._server.messages

    def set_size_limit(self, limit):
        """Advertise and enforce SIZE limit on later connections."""
        self._server.data_size_limit = limit

    def set_replies(self, mail=None, rcpt=None, data=None):
        """Make MAIL, some RCPTs or the end of DATA get these replies."""
        self._server.mail_reply = mail
        self._server.rcpt_replies = dict(rcpt or {})
        self._server.data_reply = data

    @staticmethod
    def as_received(wire):
        """What process_message gets for message bytes sent as `wire`.

        smtpd's channel hands over the unstuffed lines joined by LF, without
        the line end that precedes the terminating dot.
        """
        assert wire.endswith(b'\r\n')
        return wire[:-2].replace(b'\r\n', b'\n')


class _AiosmtpdHandler:
    """Records each message; refuses what the test tells it to."""

    def __init__(self):
        self.messages = []
        self.mail_reply = None
        self.rcpt_replies = {}
        self.data_reply = None

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return '250 OK'

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(Received(
            envelope.mail_from, list(envelope.rcpt_tos),
            envelope.original_content, list(envelope.mail_options)))
        return self.data_reply or '250 OK'


if aiosmtpd is not None:
    class _SocketController(aiosmtpd.controller.Controller):
        """A Controller serving an already listening socket (port 0)."""

        def __init__(self, handler, sock):
            self._listening_socket = sock
            host, port = sock.getsockname()[:2]
            super().__init__(handler, hostname=host, port=port,
                             ready_timeout=TIMEOUT)

        def _create_server(self):
            return self.loop.create_server(self._factory_invoker,
                                           sock=self._listening_socket)


class AiosmtpdUpstream:
    """Upstream "aiosmtpd": an independent SMTP server in its own thread."""

    def __init__(self):
        self._handler = _AiosmtpdHandler()
        sock = socket.create_server((HOST, 0))
        self.address = sock.getsockname()[:2]
        self._controller = _SocketController(self._handler, sock)
        try:
            self._controller.start()
        except BaseException:
            sock.close()
            raise

    def stop(self):
        self._controller.stop()

    @property
    def messages(self):
        return self._handler.messages

    def set_size_limit(self, limit):
        """Advertise and enforce SIZE limit on later connections."""
        self._controller.SMTP_kwargs['data_size_limit'] = limit

    def set_replies(self, mail=None, rcpt=None, data=None):
        """Make MAIL, some RCPTs or the end of DATA get these replies."""
        self._handler.mail_reply = mail
        self._handler.rcpt_replies = dict(rcpt or {})
        self._handler.data_reply = data

    @staticmethod
    def as_received(wire):
        """aiosmtpd's original_content is the unstuffed wire bytes."""
        return wire


class ScriptedUpstream:
    """A raw-socket upstream that fails in one of the ways a test asks for.

    behaviour is one of:
      'silent'         accept the connection, never send a byte;
      'hang-after-data' talk normally, never answer the end of the message;
      'greet-554'      greet with 554, refuse all but QUIT (RFC 5321 3.1);
      'drop-at-mail'   greet, answer EHLO, hang up on MAIL;
      'refuse-8bit'    refuse every RCPT with REFUSAL_8BIT, 8-bit text.
    """

    GREETING_554 = b'554 5.3.2 upstream.example is not accepting mail'
    REFUSAL_8BIT = '550 5.1.1 n\u00e4y'.encode('utf-8')

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._connections = []
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.address = self._listener.getsockname()[:2]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            self._connections.append(conn)
            self.connected.set()
            thread = threading.Thread(target=self._serve, args=(conn,),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            try:
                if self.behaviour == 'silent':
                    self._stopping.wait(TIMEOUT * 3)
                    return
                if self.behaviour == 'greet-554':
                    conn.sendall(self.GREETING_554 + b'\r\n')
                else:
                    conn.sendall(b'220 upstream.example ESMTP\r\n')
                with conn.makefile('rb') as lines:
                    self._converse(conn, lines)
            except OSError:
                pass

    def _converse(self, conn, lines):
        while not self._stopping.is_set():
            line = lines.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b'QUIT':
                conn.sendall(b'221 bye\r\n')
                return
            elif self.behaviour == 'greet-554':
                conn.sendall(b'503 5.5.1 No SMTP service here\r\n')
            elif verb == b'EHLO':
                conn.sendall(b'250-upstream.example\r\n250 8BITMIME\r\n')
            elif verb == b'MAIL' and self.behaviour == 'drop-at-mail':
                return
            elif verb == b'RCPT' and self.behaviour == 'refuse-8bit':
                conn.sendall(self.REFUSAL_8BIT + b'\r\n')
            elif verb == b'DATA':
                conn.sendall(b'354 go ahead\r\n')
                while lines.readline() not in (b'.\r\n', b''):
                    pass
                # 'hang-after-data': the message is in, no reply ever comes.
                self._after_data(lines)
                return
            else:
                conn.sendall(b'250 OK\r\n')

    def _after_data(self, lines):
        self._stopping.wait(TIMEOUT * 3)

    def stop(self):
        self._stopping.set()
        self._listener.close()
        for conn in self._connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(TIMEOUT)


UPSTREAMS = [
    pytest.param(SmtpdUpstream, id='smtpd'),
    pytest.param(AiosmtpdUpstream, id='aiosmtpd', marks=pytest.mark.skipif(
        aiosmtpd is None, reason='aiosmtpd (test dependency) not installed')),
]


@pytest.fixture(params=UPSTREAMS)
def upstream(request):
    """A recording upstream SMTP server on 127.0.0.1, each implementation."""
    server = request.param()
    yield server
    server.stop()


@pytest.fixture(params=[False, True], ids=['bytes', 'decode_data'])
def decode_data(request):
    return request.param


# ------------------------------------------------------------------ proxies

class RunningProxy:
    """A PureProxy on 127.0.0.1 served by its own asyncore loop thread."""

    def __init__(self, remoteaddr, decode_data=False, relay_timeout=None):
        self._loop = _LoopThread({})
        self.server = smtpd.PureProxy((HOST, 0), remoteaddr,
                                      map=self._loop.map,
                                      decode_data=decode_data)
        if relay_timeout is not None:
            self.server.relay_timeout = relay_timeout
        self.port = self.server.socket.getsockname()[1]
        self._loop.start()

    def client(self):
        return smtplib.SMTP(HOST, self.port, timeout=TIMEOUT)

    def stop(self):
        self._loop.stop()


@pytest.fixture
def make_proxy():
    """Start PureProxy instances; all are stopped at teardown."""
    proxies = []

    def start(remoteaddr, **kwargs):
        proxy = RunningProxy(remoteaddr, **kwargs)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def debugstream(monkeypatch):
    """Capture what smtpd prints to DEBUGSTREAM."""
    stream = io.StringIO()
    monkeypatch.setattr(smtpd, 'DEBUGSTREAM', stream)
    return stream


def _send(proxy, message, rcpttos=RECIPIENTS, mail_options=()):
    """Send one message through the proxy; return the reply to its end."""
    with proxy.client() as client:
        code, reply = client.ehlo()
        assert code == 250, reply
        code, reply = client.mail(SENDER, list(mail_options))
        assert code == 250, reply
        for rcpt in rcpttos:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        result = client.data(message)
        # The session goes on normally after whatever the relay did.
        assert client.noop() == (250, b'OK')
        return result


class _RawClient:
    """A line-level SMTP client, for replies smtplib would reassemble."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.lines = self.sock.makefile('rb')

    def reply(self):
        """Read one (possibly multi-line) reply; return its raw lines."""
        lines = [self.lines.readline()]
        while lines[-1][3:4] == b'-':
            lines.append(self.lines.readline())
        return lines

    def command(self, line):
        self.sock.sendall(line + b'\r\n')
        return self.reply()

    def start_message(self, rcpttos, message):
        """Greeting to final dot; the reply to the message is left unread."""
        assert self.reply()[0][:4] == b'220 '
        assert self.command(b'EHLO client.example')[-1][:4] == b'250 '
        assert self.command(b'MAIL FROM:<%s>' % SENDER.encode()) == [
            b'250 OK\r\n']
        for rcpt in rcpttos:
            assert self.command(b'RCPT TO:<%s>' % rcpt.encode()) == [
                b'250 OK\r\n']
        assert self.command(b'DATA')[0][:4] == b'354 '
        self.sock.sendall(message + b'.\r\n')

    def close(self):
        self.lines.close()
        self.sock.close()


# ------------------------------------------------------ byte-exact relaying

PLAIN = (b'From: sender@example.org\r\n'
         b'To: one@example.org, two@example.net\r\n'
         b'Subject: plain\r\n'
         b'\r\n'
         b'Hello.\r\n')

MULTILINE = (b'From: sender@example.org\r\n'
             b'Subject: a folded\r\n'
             b'  subject line\r\n'
             b'\r\n'
             b'First paragraph,\r\n'
             b'two lines.\r\n'
             b'\r\n'
             b'Second paragraph after an empty line.\r\n'
             + b'x' * 900 + b'\r\n'
             b'last line\r\n')

DOTS = (b'Subject: dots\r\n'
        b'\r\n'
        b'.\r\n'
        b'..\r\n'
        b'.leading dot\r\n'
        b'...three\r\n'
        b'middle . dot\r\n'
        b' .space first\r\n'
        b'.\r\n')

UTF8_8BIT = ('Subject: 8-bit\r\n'
             'Content-Type: text/plain; charset=utf-8\r\n'
             'Content-Transfer-Encoding: 8bit\r\n'
             '\r\n'
             'Grüße, naïve café ✓\r\n'
             '.ünïcode after a dot\r\n').encode('utf-8')

LATIN1_8BIT = ('Subject: latin-1\r\n'
               'Content-Type: text/plain; charset=iso-8859-1\r\n'
               '\r\n'
               'café, déjà vu\r\n').encode('latin-1')

# About 1 MB, so that it crosses many socket reads on every hop, with
# lines that need dot stuffing all along.
LARGE_BODY = b''.join(b'.%04d %s\r\n' % (i, b'z' * 990) for i in range(1000))

# Each case: client message bytes (as smtplib.data() takes them, before dot
# stuffing), whether the client sends BODY=8BITMIME, and the exact unstuffed
# bytes the upstream must get on the wire.
RELAY_CASES = {
    'plain': (PLAIN, False,
              b'From: sender@example.org\r\n'
              b'To: one@example.org, two@example.net\r\n'
              b'Subject: plain\r\n'
              b'X-Peer: 127.0.0.1\r\n'
              b'\r\n'
              b'Hello.\r\n'),
    'multi-line': (MULTILINE, False,
                   b'From: sender@example.org\r\n'
                   b'Subject: a folded\r\n'
                   b'  subject line\r\n'
                   b'X-Peer: 127.0.0.1\r\n'
                   b'\r\n'
                   b'First paragraph,\r\n'
                   b'two lines.\r\n'
                   b'\r\n'
                   b'Second paragraph after an empty line.\r\n'
                   + b'x' * 900 + b'\r\n'
                   b'last line\r\n'),
    'dot-stuffed': (DOTS, False,
                    b'Subject: dots\r\n'
                    b'X-Peer: 127.0.0.1\r\n'
                    b'\r\n'
                    b'.\r\n'
                    b'..\r\n'
                    b'.leading dot\r\n'
                    b'...three\r\n'
                    b'middle . dot\r\n'
                    b' .space first\r\n'
                    b'.\r\n'),
    # No empty line at all: X-Peer goes at the very end.
    'no-separator': (b'Subject: no body\r\nX-Other: 1\r\n', False,
                     b'Subject: no body\r\nX-Other: 1\r\n'
                     b'X-Peer: 127.0.0.1\r\n'),
    # A line of blanks is not the empty line that ends the headers.
    'blank-line-is-not-empty': (
        b'Subject: ws\r\n \r\nbody\r\n\r\nafter\r\n', False,
        b'Subject: ws\r\n \r\nbody\r\nX-Peer: 127.0.0.1\r\n\r\nafter\r\n'),
    'no-headers': (b'\r\nbody only\r\n', False,
                   b'X-Peer: 127.0.0.1\r\n\r\nbody only\r\n'),
    # The empty line that ends the message survives the relay of bytes.
    # (With decode_data=True it doesn't, as in 3.11: see DECODED_WIRE.)
    'empty-body': (b'Subject: nothing\r\n\r\n', False,
                   b'Subject: nothing\r\nX-Peer: 127.0.0.1\r\n\r\n'),
    'trailing-empty-lines': (
        b'Subject: t\r\n\r\nbody\r\n\r\n\r\n', False,
        b'Subject: t\r\nX-Peer: 127.0.0.1\r\n\r\nbody\r\n\r\n\r\n'),
    # smtplib sends an empty message as one empty line.
    'empty-message': (b'', False, b'X-Peer: 127.0.0.1\r\n\r\n'),
    # A CR before a line's CRLF is part of the line.  (With decode_data=True
    # it isn't: see DECODED_WIRE.)
    'cr-before-crlf': (b'Subject: cr\r\n\r\nx\r\r\ny\r\n', False,
                       b'Subject: cr\r\nX-Peer: 127.0.0.1\r\n\r\n'
                       b'x\r\r\ny\r\n'),
    'utf8-8bit': (UTF8_8BIT, True,
                  'Subject: 8-bit\r\n'
                  'Content-Type: text/plain; charset=utf-8\r\n'
                  'Content-Transfer-Encoding: 8bit\r\n'
                  'X-Peer: 127.0.0.1\r\n'
                  '\r\n'
                  'Grüße, naïve café ✓\r\n'
                  '.ünïcode after a dot\r\n'.encode('utf-8')),
    'large': (b'Subject: large\r\n\r\n' + LARGE_BODY, False,
              b'Subject: large\r\nX-Peer: 127.0.0.1\r\n\r\n' + LARGE_BODY),
    'latin1-8bit': (LATIN1_8BIT, True,
                    'Subject: latin-1\r\n'
                    'Content-Type: text/plain; charset=iso-8859-1\r\n'
                    'X-Peer: 127.0.0.1\r\n'
                    '\r\n'
                    'café, déjà vu\r\n'.encode('latin-1')),
}


# With decode_data=True, PureProxy hands on the str as 3.11 did, through
# smtplib's rules for str messages: a message that ends in an empty line loses
# it, because smtplib takes its CRLF for the one before the terminating dot.
DECODED_WIRE = {
    'empty-body': b'Subject: nothing\r\nX-Peer: 127.0.0.1\r\n',
    'trailing-empty-lines': (
        b'Subject: t\r\nX-Peer: 127.0.0.1\r\n\r\nbody\r\n\r\n'),
    'empty-message': b'X-Peer: 127.0.0.1\r\n',
    # smtplib made the CR and the CRLF after it one line end, not two.
    'cr-before-crlf': b'Subject: cr\r\nX-Peer: 127.0.0.1\r\n\r\nx\r\ny\r\n',
}


def _relay_params():
    for name in RELAY_CASES:
        for decode in (False, True):
            if name == 'latin1-8bit' and decode:
                # Not UTF-8, so a decode_data server cannot take it at all.
                continue
            mode = 'decode_data' if decode else 'bytes'
            yield pytest.param(name, decode, id=f'{name}-{mode}')


@pytest.mark.parametrize('case, decode', list(_relay_params()))
def test_message_arrives_byte_exact(upstream, make_proxy, case, decode):
    """Upstream gets the message unchanged but for X-Peer, same envelope."""
    message, eight_bit, wire = RELAY_CASES[case]
    if decode:
        wire = DECODED_WIRE.get(case, wire)
    proxy = make_proxy(upstream.address, decode_data=decode)
    # A decode_data server advertises no 8BITMIME and refuses BODY=, so the
    # client can only say it for the bytes server; the proxy must still tell
    # the upstream when the data has 8-bit bytes.
    options = ['BODY=8BITMIME'] if eight_bit and not decode else []
    assert _send(proxy, message, mail_options=options) == (250, b'OK')
    assert len(upstream.messages) == 1
    got = upstream.messages[0]
    assert got.content == upstream.as_received(wire)
    assert got.mail_from == SENDER
    assert got.rcpt_tos == RECIPIENTS
    assert _body_options(got.mail_options) == (
        ['BODY=8BITMIME'] if eight_bit else [])


def test_several_messages_in_one_session(upstream, make_proxy, decode_data):
    """Each message of a session is relayed with its own envelope."""
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    with proxy.client() as client:
        assert client.sendmail(SENDER, ['one@example.org'], PLAIN) == {}
        assert client.sendmail('other@example.org', RECIPIENTS[::-1],
                               b'Subject: second\r\n\r\n2\r\n') == {}
    assert [(m.mail_from, m.rcpt_tos, m.content)
            for m in upstream.messages] == [
        (SENDER, ['one@example.org'],
         upstream.as_received(RELAY_CASES['plain'][2])),
        ('other@example.org', RECIPIENTS[::-1], upstream.as_received(
            b'Subject: second\r\nX-Peer: 127.0.0.1\r\n\r\n2\r\n')),
    ]


# ------------------------------------------------------ upstream refusals

NO_SUCH_USER = '550 5.1.1 No such user'
MAILBOX_BUSY = '450 4.2.1 Mailbox busy, try later'


def test_one_recipient_refused(upstream, make_proxy, decode_data,
                               debugstream):
    """Client gets 250 OK; the accepted recipient gets the message."""
    upstream.set_replies(rcpt={'two@example.net': NO_SUCH_USER})
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN) == (250, b'OK')
    assert [(m.rcpt_tos, m.content) for m in upstream.messages] == [
        (['one@example.org'], upstream.as_received(RELAY_CASES['plain'][2]))]
    # The refusal is only logged, as 3.11 did.
    assert ("we got some refusals: {'two@example.net': "
            "(550, b'5.1.1 No such user')}\n") in debugstream.getvalue()


@pytest.mark.parametrize('replies, expected', [
    pytest.param({'one@example.org': NO_SUCH_USER,
                  'two@example.net': NO_SUCH_USER},
                 (550, b'5.1.1 No such user'), id='550-stays-550'),
    pytest.param({'one@example.org': MAILBOX_BUSY,
                  'two@example.net': MAILBOX_BUSY},
                 (450, b'4.2.1 Mailbox busy, try later'), id='450-stays-450'),
    # A temporary failure wins: the client should retry, not bounce.
    pytest.param({'one@example.org': NO_SUCH_USER,
                  'two@example.net': MAILBOX_BUSY},
                 (450, b'4.2.1 Mailbox busy, try later'), id='4xx-over-5xx'),
    pytest.param({'one@example.org': '551 5.1.6 User has moved',
                  'two@example.net': NO_SUCH_USER},
                 (551, b'5.1.6 User has moved'), id='first-5xx'),
])
def test_all_recipients_refused(upstream, make_proxy, decode_data,
                                replies, expected):
    """The client gets the upstream's own code and text, not 250."""
    upstream.set_replies(rcpt=replies)
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN) == expected
    assert upstream.messages == []


def test_all_refused_through_sendmail(upstream, make_proxy, decode_data):
    """smtplib's sendmail raises SMTPDataError with the upstream's reply."""
    upstream.set_replies(rcpt={r: NO_SUCH_USER for r in RECIPIENTS})
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    with proxy.client() as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, RECIPIENTS, PLAIN)
    assert (caught.value.smtp_code, caught.value.smtp_error) == (
        550, b'5.1.1 No such user')


def test_sender_refused(upstream, make_proxy, decode_data):
    """An upstream refusing MAIL FROM: its code and text reach the client."""
    upstream.set_replies(mail='553 5.7.1 Sender address rejected')
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN) == (553, b'5.7.1 Sender address rejected')
    assert upstream.messages == []


def test_message_refused_after_data(upstream, make_proxy, decode_data):
    """An upstream refusing the message itself: the client gets its reply."""
    upstream.set_replies(data='554 5.7.1 Rejected by content filter')
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN) == (554, b'5.7.1 Rejected by content filter')


def test_upstream_size_limit(upstream, make_proxy, decode_data):
    """A message over the upstream's SIZE limit gets the upstream's 552."""
    upstream.set_size_limit(100)
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN + b'x' * 100 + b'\r\n') == (
        552, b'Error: message size exceeds fixed maximum message size')
    assert upstream.messages == []


def test_all_recipients_refused_is_logged_as_in_3_11(upstream, make_proxy,
                                                     decode_data, debugstream):
    """DEBUGSTREAM gets 3.11's two lines: the exception, then the refusals."""
    upstream.set_replies(rcpt={r: NO_SUCH_USER for r in RECIPIENTS})
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    assert _send(proxy, PLAIN) == (550, b'5.1.1 No such user')
    # (The upstream "smtpd" logs to the same stream, but only before its
    # reply to QUIT, which comes before these lines.)
    assert ("\ngot SMTPRecipientsRefused\n"
            "we got some refusals: {"
            "'one@example.org': (550, b'5.1.1 No such user'), "
            "'two@example.net': (550, b'5.1.1 No such user')}\n"
            ) in "\n" + debugstream.getvalue()


def test_multiline_refusal_is_one_reply_line(upstream, make_proxy,
                                             decode_data):
    """A multi-line upstream reply is passed on as one line."""
    multiline = '550-5.1.1 first line\r\n550 5.1.1 second line'
    upstream.set_replies(rcpt={r: multiline for r in RECIPIENTS})
    proxy = make_proxy(upstream.address, decode_data=decode_data)
    client = _RawClient(proxy.port)
    try:
        client.start_message(RECIPIENTS, PLAIN)
        line = client.lines.readline()
        assert re.fullmatch(
            rb'550 5\.1\.1 first line[^\r\n]*second line\r\n', line), line
        # Nothing else was sent: the next reply is the NOOP's.
        assert client.command(b'NOOP') == [b'250 OK\r\n']
    finally:
        client.close()


# ---------------------------------------------- unreachable and hung upstreams

def test_upstream_down(make_proxy, decode_data, debugstream):
    """Nothing listening upstream: 451, so the client keeps the message."""
    with _reserved_dead_port() as dead:
        proxy = make_proxy(dead.getsockname(), decode_data=decode_data)
        with proxy.client() as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail(SENDER, RECIPIENTS, PLAIN)
            assert (caught.value.smtp_code, caught.value.smtp_error) == (
                451, UNAVAILABLE)
            # The proxy's session survives for the next try.
            assert client.noop() == (250, b'OK')
    # DEBUGSTREAM gets 3.11's two lines: the exception's class, the refusals.
    assert ("\ngot <class 'ConnectionRefusedError'>\n"
            "we got some refusals: {"
            "'one@example.org': (-1, 'ignore'), "
            "'two@example.net': (-1, 'ignore')}\n"
            ) in "\n" + debugstream.getvalue()


@pytest.mark.parametrize('behaviour, expected', [
    ('greet-554', (554, ScriptedUpstream.GREETING_554[4:])),
    ('drop-at-mail', (451, UNAVAILABLE)),
])
def test_upstream_misbehaves(make_proxy, decode_data, behaviour, expected):
    """A refusing greeting keeps its code; a hang-up without a code is 451."""
    failing = ScriptedUpstream(behaviour)
    try:
        proxy = make_proxy(failing.address, decode_data=decode_data)
        assert _send(proxy, PLAIN) == expected
    finally:
        failing.stop()


def test_8bit_refusal_text_is_escaped(make_proxy, decode_data):
    """Upstream text that isn't ASCII reaches the client as backslash
    escapes: the reply line stays ASCII, and says what the upstream said."""
    refusing = ScriptedUpstream('refuse-8bit')
    client = None
    try:
        proxy = make_proxy(refusing.address, decode_data=decode_data)
        client = _RawClient(proxy.port)
        client.start_message(RECIPIENTS, PLAIN)
        assert client.lines.readline() == b'550 5.1.1 n\\xc3\\xa4y\r\n'
        assert client.command(b'NOOP') == [b'250 OK\r\n']
    finally:
        if client is not None:
            client.close()
        refusing.stop()


def test_upstream_hangs_up_on_quit(make_proxy):
    """Delivered before the upstream hung up on QUIT: 250 OK, no refusal."""
    upstream = SmtpdUpstream(_HangUpOnQuitServer)
    try:
        proxy = make_proxy(upstream.address)
        with proxy.client() as client:
            assert client.sendmail(SENDER, RECIPIENTS, PLAIN) == {}
            assert client.noop() == (250, b'OK')
    finally:
        upstream.stop()
    assert [(m.mail_from, m.rcpt_tos, m.content)
            for m in upstream.messages] == [
        (SENDER, RECIPIENTS, upstream.as_received(RELAY_CASES['plain'][2]))]


RELAY_TIMEOUT = 1.0
# How long after the relay_timeout a reply may take on a loaded 2-core machine.
SLACK = 2.0


@pytest.mark.parametrize('behaviour', ['silent', 'hang-after-data'])
def test_hung_upstream_is_bounded_by_relay_timeout(make_proxy, decode_data,
                                                   behaviour):
    """The client gets 451, and a waiting client is served, soon after
    relay_timeout.  (Relaying blocks the proxy's loop meanwhile.)"""
    hung = ScriptedUpstream(behaviour)
    first = second = None
    try:
        proxy = make_proxy(hung.address, decode_data=decode_data,
                           relay_timeout=RELAY_TIMEOUT)
        first = _RawClient(proxy.port, timeout=RELAY_TIMEOUT + SLACK + 1)
        first.start_message(RECIPIENTS, PLAIN)
        assert hung.connected.wait(TIMEOUT), 'proxy never reached upstream'
        started = time.monotonic()
        second = _RawClient(proxy.port, timeout=RELAY_TIMEOUT + SLACK + 1)
        greeting = second.lines.readline()
        greeted_after = time.monotonic() - started
        reply = first.lines.readline()
        replied_after = time.monotonic() - started
    finally:
        # Stop the hung upstream first: that unblocks a proxy without a
        # timeout (3.11), so its loop thread can be stopped.
        hung.stop()
        for client in (first, second):
            if client is not None:
                client.close()
    assert reply == b'451 ' + UNAVAILABLE + b'\r\n'
    assert greeting.startswith(b'220 ')
    assert replied_after <= RELAY_TIMEOUT + SLACK, replied_after
    assert greeted_after <= RELAY_TIMEOUT + SLACK, greeted_after


def test_relay_timeout_default():
    """relay_timeout is a class attribute, 30 seconds by default."""
    assert smtpd.PureProxy.relay_timeout == 30.0


# ------------------------------------------------------------ _deliver()

@pytest.fixture
def idle_proxy():
    """Build a PureProxy without serving it, to call _deliver() directly."""
    made = []

    def build(remoteaddr):
        made.append(smtpd.PureProxy((HOST, 0), remoteaddr, map={}))
        return made[-1]

    yield build
    for proxy in made:
        proxy.close()


@pytest.mark.parametrize('data', [
    # As process_message passes it: lines joined by LF, no final line end.
    pytest.param('Subject: str\n\nas 3.11 passes it', id='str-LF'),
    # smtplib sends bytes as they are (bare LFs too), as in 3.11.
    pytest.param(b'Subject: bytes\n\nbare LF line ends', id='bytes-LF'),
    # A subclass may hand _deliver a message with CRLF line ends already;
    # 3.11 relayed those unchanged.
    pytest.param('Subject: str\r\n\r\nCRLF line ends\r\n', id='str-CRLF'),
    pytest.param(b'Subject: bytes\r\n\r\nCRLF line ends\r\n',
                 id='bytes-CRLF'),
])
def test_deliver_success(upstream, idle_proxy, data):
    """_deliver returns {} when every recipient was accepted."""
    proxy = idle_proxy(upstream.address)
    assert proxy._deliver(SENDER, RECIPIENTS, data) == {}
    if isinstance(data, str):
        # smtplib turns a str's line ends into CRLF.
        data = data.encode('ascii').replace(b'\r\n', b'\n')
        data = data.replace(b'\n', b'\r\n')
    if not data.endswith(b'\r\n'):
        data += b'\r\n'
    wire = data
    assert [(m.mail_from, m.rcpt_tos, m.content)
            for m in upstream.messages] == [
        (SENDER, RECIPIENTS, upstream.as_received(wire))]


def test_deliver_refusals(upstream, idle_proxy):
    """_deliver maps each refused recipient to the upstream's (code, text)."""
    proxy = idle_proxy(upstream.address)
    upstream.set_replies(rcpt={'two@example.net': NO_SUCH_USER})
    assert proxy._deliver(SENDER, RECIPIENTS, 'Subject: x\n\ny\n') == {
        'two@example.net': (550, b'5.1.1 No such user')}
    upstream.set_replies(rcpt={'one@example.org': MAILBOX_BUSY,
                               'two@example.net': NO_SUCH_USER})
    assert proxy._deliver(SENDER, RECIPIENTS, 'Subject: x\n\ny\n') == {
        'one@example.org': (450, b'4.2.1 Mailbox busy, try later'),
        'two@example.net': (550, b'5.1.1 No such user')}
    upstream.set_replies(mail='553 5.7.1 Sender address rejected')
    assert proxy._deliver(SENDER, RECIPIENTS, 'Subject: x\n\ny\n') == {
        rcpt: (553, b'5.7.1 Sender address rejected') for rcpt in RECIPIENTS}


def test_deliver_upstream_down(idle_proxy):
    """Unreachable upstream: every recipient maps to (-1, 'ignore')."""
    with _reserved_dead_port() as dead:
        proxy = idle_proxy(dead.getsockname())
        assert proxy._deliver(SENDER, RECIPIENTS, 'Subject: x\n\ny\n') == {
            rcpt: (-1, 'ignore') for rcpt in RECIPIENTS}


# ------------------------------------------------------------- construction

def test_smtputf8_is_refused():
    """PureProxy(enable_SMTPUTF8=True) raises before binding anything."""
    socket_map = {}
    with pytest.raises(ValueError) as caught:
        smtpd.PureProxy((HOST, 0), (HOST, 25), map=socket_map,
                        enable_SMTPUTF8=True)
    assert str(caught.value) == 'PureProxy does not support SMTPUTF8.'
    assert socket_map == {}


# --------------------------------------------------------------------- CLI

def test_cli_default_class_relays(upstream, tmp_path):
    """`python -m smtpd -n LOCAL REMOTE` relays a message on the first try."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(
        os.path.abspath(smtpd.__file__)))
    command = [sys.executable, '-m', 'smtpd', '-n', f'{HOST}:{port}',
               '%s:%d' % upstream.address]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                client = smtplib.SMTP(HOST, port, timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, 'CLI never listened'
                time.sleep(0.05)
        with client:
            assert client.sendmail(SENDER, RECIPIENTS, PLAIN) == {}
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert [(m.mail_from, m.rcpt_tos, m.content)
            for m in upstream.messages] == [
        (SENDER, RECIPIENTS, upstream.as_received(RELAY_CASES['plain'][2]))
    ], err


# ------------------------------------- the proxy's goodbye and reply codes

class _QuitRecordingChannel(_SmtpdUpstreamChannel):
    """Records each QUIT and each closed connection on its server."""

    def smtp_QUIT(self, arg):
        self.smtp_server.events.append('QUIT')
        super().smtp_QUIT(arg)

    def handle_close(self):
        self.smtp_server.events.append('closed')
        super().handle_close()

    def close(self):
        if 'closed' not in self.smtp_server.events[-1:]:
            self.smtp_server.events.append('closed')
        super().close()


class _QuitRecordingServer(_SmtpdUpstreamServer):
    channel_class = _QuitRecordingChannel

    def __init__(self, socket_map):
        super().__init__(socket_map)
        self.events = []


def _wait_for(predicate, what):
    """Wait (bounded by TIMEOUT) until predicate() is true."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.01)


class _RecordingSMTP(smtplib.SMTP):
    """smtplib.SMTP recording its timeout and its socket's after connect."""

    made = []

    def __init__(self, *args, **kwargs):
        self.record = {'thread': threading.current_thread(),
                       'timeout': kwargs.get('timeout')}
        self.made.append(self.record)
        super().__init__(*args, **kwargs)

    def connect(self, *args, **kwargs):
        result = super().connect(*args, **kwargs)
        self.record['socket_timeout'] = self.sock.gettimeout()
        return result


def test_upstream_connection_uses_default_relay_timeout(upstream, make_proxy,
                                                        monkeypatch):
    """The upstream connection's socket times out after relay_timeout, 30
    seconds unless set (a hung upstream then costs at most that a step)."""
    assert smtpd.PureProxy.relay_timeout == 30.0
    monkeypatch.setattr(_RecordingSMTP, 'made', [])
    monkeypatch.setattr(smtplib, 'SMTP', _RecordingSMTP)
    proxy = make_proxy(upstream.address)
    assert proxy.server.relay_timeout == 30.0
    assert _send(proxy, PLAIN) == (250, b'OK')
    assert len(upstream.messages) == 1
    # The test's own client is made in this thread; the proxy's upstream
    # connection in the proxy's loop thread.
    relays = [r for r in _RecordingSMTP.made
              if r['thread'] is not threading.current_thread()]
    assert relays == [{'thread': relays[0]['thread'], 'timeout': 30.0,
                       'socket_timeout': 30.0}]


def test_upstream_connection_uses_set_relay_timeout(upstream, make_proxy,
                                                    monkeypatch):
    """A relay_timeout set on the instance is the upstream socket's."""
    monkeypatch.setattr(_RecordingSMTP, 'made', [])
    monkeypatch.setattr(smtplib, 'SMTP', _RecordingSMTP)
    proxy = make_proxy(upstream.address, relay_timeout=7.5)
    assert _send(proxy, PLAIN) == (250, b'OK')
    relays = [r for r in _RecordingSMTP.made
              if r['thread'] is not threading.current_thread()]
    assert [(r['timeout'], r['socket_timeout']) for r in relays] == [
        (7.5, 7.5)]


@pytest.mark.parametrize('rcpt_replies, reply', [
    # Every recipient refused: the connection is still good, so the proxy
    # says QUIT before it closes it, as 3.11 did.
    pytest.param({r: NO_SUCH_USER for r in RECIPIENTS},
                 (550, b'5.1.1 No such user'), id='all-refused'),
    pytest.param({}, (250, b'OK'), id='delivered'),
])
def test_quit_before_closing_a_good_connection(make_proxy, decode_data,
                                               rcpt_replies, reply):
    """After a refusal or a delivery: QUIT, then the connection closes."""
    upstream = SmtpdUpstream(_QuitRecordingServer)
    try:
        upstream.set_replies(rcpt=rcpt_replies)
        proxy = make_proxy(upstream.address, decode_data=decode_data)
        assert _send(proxy, PLAIN) == reply
        events = upstream._server.events
        _wait_for(lambda: 'closed' in events, 'the upstream connection '
                  'to close')
    finally:
        upstream.stop()
    assert events[:2] == ['QUIT', 'closed'], events
    assert len(upstream.messages) == (0 if rcpt_replies else 1)


@pytest.mark.parametrize('replies, expected', [
    # 400 is the lowest temporary code: passed on as it is.
    pytest.param({'one@example.org': '400 try later'},
                 b'400 try later\r\n', id='400-passed-on'),
    # 599 is the highest code passed on.
    pytest.param({'one@example.org': '599 the last one'},
                 b'599 the last one\r\n', id='599-passed-on'),
    # 600 is no SMTP reply code: the proxy has nothing to pass on.
    pytest.param({'one@example.org': '600 nonsense'},
                 b'451 ' + UNAVAILABLE + b'\r\n', id='600-is-451'),
    pytest.param({'one@example.org': '399 nonsense'},
                 b'451 ' + UNAVAILABLE + b'\r\n', id='399-is-451'),
    # 500 is permanent: a later 4xx wins over it.
    pytest.param({'one@example.org': '500 no',
                  'two@example.net': '450 later'},
                 b'450 later\r\n', id='450-over-500'),
    pytest.param({'one@example.org': '499 almost',
                  'two@example.net': '500 no'},
                 b'499 almost\r\n', id='499-over-500'),
    pytest.param({'one@example.org': '500 no',
                  'two@example.net': '499 almost'},
                 b'499 almost\r\n', id='499-over-earlier-500'),
])
def test_refusal_reply_code_edges(make_proxy, replies, expected):
    """Nobody accepted: the exact reply line the client gets."""
    upstream = SmtpdUpstream()
    client = None
    try:
        upstream.set_replies(rcpt=replies)
        proxy = make_proxy(upstream.address)
        client = _RawClient(proxy.port)
        client.start_message(list(replies), PLAIN)
        assert client.lines.readline() == expected
        assert client.command(b'NOOP') == [b'250 OK\r\n']
    finally:
        if client is not None:
            client.close()
        upstream.stop()
    assert upstream.messages == []


class _ListeningHungUpstream(ScriptedUpstream):
    """Never answers the end of the message, but records what it gets
    after it, until the proxy hangs up."""

    def __init__(self):
        self.after_data = []
        self.hung_up = threading.Event()
        super().__init__('hang-after-data')

    def _after_data(self, lines):
        # No reply to the message: read on until the proxy hangs up.
        try:
            for line in lines:
                self.after_data.append(line)
        except OSError:
            pass
        else:
            self.hung_up.set()


def test_no_quit_to_a_timed_out_upstream(make_proxy):
    """After a timeout the proxy hangs up without QUIT: a QUIT would only
    wait another relay_timeout for the reply of a hung upstream.  (smtplib
    itself closes the connection on a timeout, so this guards the result,
    not PureProxy's own `lost` test, which the QUIT tests above cover.)"""
    hung = _ListeningHungUpstream()
    client = None
    try:
        proxy = make_proxy(hung.address, relay_timeout=0.5)
        client = _RawClient(proxy.port)
        client.start_message(RECIPIENTS, PLAIN)
        assert client.lines.readline() == b'451 ' + UNAVAILABLE + b'\r\n'
        assert hung.hung_up.wait(TIMEOUT), 'proxy never hung up'
    finally:
        if client is not None:
            client.close()
        hung.stop()
    assert hung.after_data == []
