"""Rows of the README's differences table not shown by another test module.

Each test here fails against CPython 3.11's smtpd (it crashed, or looked up
the host name on every connection) and passes against pysmtpd.  The other
rows are shown in test_hostile.py, test_proxy.py and test_smtpd.py.
"""

import contextlib
import io
import socket
import threading

import asyncore
import pytest

import smtpd


class Recorder(smtpd.SMTPServer):
    """Keep every message."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.messages.append((mailfrom, rcpttos, data))


@contextlib.contextmanager
def serving(server):
    """Run an asyncore loop over the server's own map in a thread."""
    map_ = server._map
    stop = threading.Event()

    def loop():
        while not stop.is_set() and map_:
            asyncore.loop(timeout=0.05, map=map_, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        asyncore.close_all(map=map_)
        assert not thread.is_alive()


class LineClient:
    """A raw client: send bytes, read exact reply lines."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")
        self.banner = self.file.readline()

    def cmd(self, line):
        self.sock.sendall(line + b"\r\n")
        reply = self.file.readline()
        while reply[3:4] == b"-":
            reply = self.file.readline()
        return reply

    def close(self):
        self.file.close()
        self.sock.close()


def address_of(server):
    return server.socket.getsockname()[:2]


@pytest.mark.parametrize("param, reply", [
    # 3.11: AttributeError ('bool' object has no attribute 'isdigit').
    (b"SIZE", b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"),
    # 3.11: ValueError from int('\u00b2'), which str.isdigit() accepts.
    ("SIZE=\u00b2".encode(),
     b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"),
    # Digits int() reads are accepted, as in 3.11.
    ("SIZE=\u0661\u0662".encode(), b"250 OK\r\n"),
    (b"SIZE=12", b"250 OK\r\n"),
])
def test_size_parameter_without_a_number_is_a_syntax_error(param, reply):
    """Row size-param."""
    server = Recorder(("127.0.0.1", 0), None, map={})
    with serving(server):
        client = LineClient(address_of(server))
        try:
            assert client.cmd(b"EHLO there").startswith(b"250 ")
            assert client.cmd(b"MAIL FROM:<a@example.org> " + param) == reply
            # The session goes on; a refused MAIL was refused whole (one
            # reply, no sender kept).
            if reply != b"250 OK\r\n":
                assert client.cmd(b"MAIL FROM:<a@example.org>") == b"250 OK\r\n"
            assert client.cmd(b"NOOP") == b"250 OK\r\n"
        finally:
            client.close()


def test_fqdn_is_looked_up_once(monkeypatch):
    """Row fqdn-once: one getfqdn() call for many connections."""
    calls = []

    def getfqdn(name=""):
        calls.append(name)
        return "mail.test.invalid"

    monkeypatch.setattr(smtpd.socket, "getfqdn", getfqdn)
    server = Recorder(("127.0.0.1", 0), None, map={})
    with serving(server):
        for _ in range(3):
            client = LineClient(address_of(server))
            try:
                assert client.banner.startswith(b"220 mail.test.invalid ")
                assert client.cmd(b"HELO x") == b"250 mail.test.invalid\r\n"
            finally:
                client.close()
    assert len(calls) <= 1

    # Code that replaces getfqdn (or smtpd.socket) gets its own answer.
    monkeypatch.setattr(smtpd.socket, "getfqdn", lambda name="": "other.invalid")
    server = Recorder(("127.0.0.1", 0), None, map={})
    with serving(server):
        client = LineClient(address_of(server))
        try:
            assert client.banner.startswith(b"220 other.invalid ")
        finally:
            client.close()


def test_proxy_refuses_non_ascii_address_instead_of_dropping(monkeypatch):
    """Row proxy-ascii: smtplib can't send it; 3.11 dropped the connection."""
    debugstream = io.StringIO()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", debugstream)
    # Each in a loop of its own: the proxy's relay blocks its loop.
    upstream = Recorder(("127.0.0.1", 0), None, map={})
    # decode_data=True: the mode in which 3.11's PureProxy got this far.
    proxy = smtpd.PureProxy(("127.0.0.1", 0), address_of(upstream), map={},
                            decode_data=True)
    proxy.relay_timeout = 10
    with serving(upstream), serving(proxy):
        client = LineClient(address_of(proxy))
        try:
            assert client.cmd(b"EHLO there").startswith(b"250 ")
            assert client.cmd("MAIL FROM:<j\u00fcrgen@example.org>".encode()) == (
                b"250 OK\r\n")
            assert client.cmd(b"RCPT TO:<bob@example.org>") == b"250 OK\r\n"
            assert client.cmd(b"DATA").startswith(b"354 ")
            assert client.cmd(b"Subject: hi\r\n\r\nbody\r\n.") == (
                b"553 Error: only ASCII addresses can be relayed\r\n")
            # Still in session: an ASCII sender gets through.
            assert client.cmd(b"MAIL FROM:<alice@example.org>") == b"250 OK\r\n"
            assert client.cmd(b"RCPT TO:<bob@example.org>") == b"250 OK\r\n"
            assert client.cmd(b"DATA").startswith(b"354 ")
            assert client.cmd(b"Subject: hi\r\n\r\nbody\r\n.") == b"250 OK\r\n"
        finally:
            client.close()
    assert [m[:2] for m in upstream.messages] == [
        ("alice@example.org", ["bob@example.org"])]
    # Logged as 3.11 logged the errors it caught: "got" and the class.
    assert ("\ngot <class 'UnicodeEncodeError'>\n"
            "we got some refusals: {'bob@example.org': "
            "(553, 'Error: only ASCII addresses can be relayed')}\n"
            ) in "\n" + debugstream.getvalue()
