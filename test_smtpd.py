"""Unit tests for smtpd, the SMTP server module CPython shipped until 3.11.

Every test talks to a real server: an SMTPServer bound to an ephemeral port on
127.0.0.1, run by asyncore.loop() over its own socket map in a thread, and a
real client (a tiny line client for exact bytes, smtplib where the client's
side does not matter).  Where a fault can't be made for real (a socket that
refuses TCP_NODELAY, getpeername() failing with EINVAL), a wrapper around the
server's accepted socket fails that one call.  The command line is run as
`python -m smtpd` in a subprocess.

The expectations are CPython 3.11's behaviour, byte for byte.  The same file
runs against 3.11's own smtpd (the oracle): with python3.11, from a directory
that has no smtpd.py, `python3.11 -m pytest test_smtpd.py`.  The few tests
that pin a documented deviation from 3.11 are marked with deviation(ROW) and
skipped when the module under test is the standard library's.
"""

import collections
import contextlib
import errno
import gc
import getopt
import inspect
import io
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
import time
import types
import warnings
from dataclasses import dataclass

import pytest

with warnings.catch_warnings():
    # 3.11's own asyncore warns on import; that is not what is under test.
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore

import smtpd

MODULE_DIR = os.path.dirname(os.path.abspath(smtpd.__file__))

# True when the module under test is CPython's own (the oracle, 3.11).
ORACLE = os.path.realpath(MODULE_DIR) == os.path.realpath(
    sysconfig.get_paths()["stdlib"])


def deviation(row):
    """Mark a test that pins a row of the README's deviations table."""
    return pytest.mark.skipif(
        ORACLE, reason=f"pysmtpd deviates from 3.11 here ({row})")


FQDN = socket.getfqdn()
VERSION = "Python SMTP proxy version 0.3"
CLIENT_TIMEOUT = 5.0
LOOP_DEADLINE = 600.0       # no server thread outlives this, whatever happens


def wire(*lines):
    """The exact bytes of reply `lines`, each ended by CRLF."""
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def wait_for(predicate, timeout=CLIENT_TIMEOUT):
    """Poll `predicate` (set by the server thread) until true or timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("server did not get there in time")
        time.sleep(0.002)


# ---------------------------------------------------------------------------
# A server in a thread, a line client

@dataclass
class Message:
    """What one call of process_message() was given."""
    peer: tuple
    mailfrom: str
    rcpttos: list
    data: object
    kwargs: dict


class RecordingServer(smtpd.SMTPServer):
    """Records every message and every channel; answers with `reply`."""

    reply = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []
        self.channels = {}

    def handle_accepted(self, conn, addr):
        # Multi-line replies are several pushes; without this, Nagle and
        # delayed ACKs make each cost 40 ms on loopback.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle_accepted(conn, addr)
        # Runs in the loop thread, so walking the map here is safe.
        for obj in list(self._map.values()):
            if isinstance(obj, smtpd.SMTPChannel) and obj.addr == addr:
                self.channels[addr] = obj

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.messages.append(Message(peer, mailfrom, rcpttos, data, kwargs))
        return self.reply


class ServerThread:
    """An SMTP server on 127.0.0.1, looping over its own map in a thread."""

    def __init__(self, server_class=RecordingServer, localaddr=("127.0.0.1", 0),
                 **kwargs):
        self.map = {}
        self.server = server_class(localaddr, ("127.0.0.1", 9),
                                   map=self.map, **kwargs)
        self.address = self.server.socket.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + LOOP_DEADLINE
        while not self._stop.is_set() and time.monotonic() < deadline:
            asyncore.loop(timeout=0.05, map=self.map, count=1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)
        asyncore.close_all(map=self.map)
        assert not self._thread.is_alive(), "server loop did not stop"

    def channel(self, client):
        """The server's channel for `client`."""
        # The greeting may reach the client before handle_accepted returns.
        wait_for(lambda: client.address in self.server.channels)
        return self.server.channels[client.address]


class LineClient:
    """A raw SMTP client that returns replies as the exact bytes received."""

    def __init__(self, address, timeout=CLIENT_TIMEOUT):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.address = self.sock.getsockname()
        self._file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def reply(self):
        """Read one whole reply, continuation lines included."""
        lines = []
        while True:
            line = self._file.readline()
            lines.append(line)
            if line[3:4] != b"-":      # last line, or end of file
                return b"".join(lines)

    def cmd(self, line):
        """Send one command line and return the reply."""
        self.send(line + ("\r\n" if isinstance(line, str) else b"\r\n"))
        return self.reply()

    def at_eof(self):
        """True when the server has closed the connection."""
        return self._file.read() == b""

    def close(self):
        self._file.close()
        self.sock.close()


@dataclass(frozen=True)
class Config:
    """One way of building the server: the arguments SMTPServer is given."""
    name: str
    decode_data: bool = False
    enable_SMTPUTF8: bool = False
    data_size_limit: object = smtpd.DATA_SIZE_DEFAULT

    @property
    def kwargs(self):
        return dict(decode_data=self.decode_data,
                    enable_SMTPUTF8=self.enable_SMTPUTF8,
                    data_size_limit=self.data_size_limit)

    def text(self, data):
        """Message data as process_message gets it in this configuration."""
        return data.decode("utf-8") if self.decode_data else data


BYTES = Config("bytes")
STR = Config("str", decode_data=True)
UTF8 = Config("smtputf8", enable_SMTPUTF8=True)
NOLIMIT = Config("nolimit", data_size_limit=None)
CONFIGS = [BYTES, STR, UTF8, NOLIMIT]

EHLO_REPLY = {
    "bytes": wire(f"250-{FQDN}", "250-SIZE 33554432", "250-8BITMIME",
                  "250 HELP"),
    "str": wire(f"250-{FQDN}", "250-SIZE 33554432", "250 HELP"),
    "smtputf8": wire(f"250-{FQDN}", "250-SIZE 33554432", "250-8BITMIME",
                     "250-SMTPUTF8", "250 HELP"),
    "nolimit": wire(f"250-{FQDN}", "250-8BITMIME", "250 HELP"),
}


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: c.name)
def server(request):
    """A recording server in one configuration, shared by a module's tests."""
    with ServerThread(**request.param.kwargs) as running:
        running.config = request.param
        yield running


@pytest.fixture
def config(server):
    return server.config


@pytest.fixture
def client(server):
    """A fresh connection to `server`; its greeting has been read."""
    server.server.messages.clear()
    conn = LineClient(server.address)
    yield conn
    conn.close()


@pytest.fixture(params=["fresh", "helo", "ehlo"])
def phase(request):
    return request.param


@pytest.fixture
def greeted(client, phase, config):
    """`client` after nothing, HELO or EHLO, as `phase` says."""
    if phase != "fresh":
        greet(client, phase.upper(), config)
    return client


def greet(client, how, config):
    """Send HELO or EHLO and check its reply."""
    if how == "HELO":
        assert client.cmd("HELO client.example") == wire(f"250 {FQDN}")
    else:
        assert client.cmd("EHLO client.example") == EHLO_REPLY[config.name]


@contextlib.contextmanager
def session(server_class=RecordingServer, **kwargs):
    """A private server and one client connected to it."""
    with ServerThread(server_class, **kwargs) as running:
        conn = LineClient(running.address)
        try:
            yield running, conn
        finally:
            conn.close()


def send_envelope(client, mailfrom="<a@example.org>", rcpts=("<b@example.org>",)):
    assert client.cmd(f"MAIL FROM:{mailfrom}") == wire("250 OK")
    for rcpt in rcpts:
        assert client.cmd(f"RCPT TO:{rcpt}") == wire("250 OK")


def send_data(client, body):
    """DATA, then `body` as raw bytes (which must end the message)."""
    assert client.cmd("DATA") == wire("354 End data with <CR><LF>.<CR><LF>")
    client.send(body)
    return client.reply()


# ---------------------------------------------------------------------------
# Every reply of every command

def test_greeting(client):
    assert client.greeting == wire(f"220 {FQDN} {VERSION}")


SYNTAX_MAIL = "501 Syntax: MAIL FROM: <address>"
SYNTAX_RCPT = "501 Syntax: RCPT TO: <address>"
EXTENDED = " [SP <mail-parameters>]"
SUPPORTED = "Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
SEND_HELO = "503 Error: send HELO first"

# Replies that depend on nothing: not on the configuration, nor on HELO/EHLO.
REPLIES_IN_EVERY_STATE = [
    ("NOOP", "250 OK"),
    ("noop", "250 OK"),
    ("NOOP now", "501 Syntax: NOOP"),
    ("RSET", "250 OK"),
    ("RSET all", "501 Syntax: RSET"),
    ("EXPN", "502 EXPN not implemented"),
    ("EXPN staff", "502 EXPN not implemented"),
    ("VRFY", "501 Syntax: VRFY <address>"),
    ("VRFY <user@example.org>",
     "252 Cannot VRFY user, but will accept message and attempt delivery"),
    ("vrfy user", "252 Cannot VRFY user, but will accept message and attempt delivery"),
    ("HELP", "250 " + SUPPORTED),
    ("help", "250 " + SUPPORTED),
    ("HELP EHLO", "250 Syntax: EHLO hostname"),
    ("HELP HELO", "250 Syntax: HELO hostname"),
    ("help helo", "250 Syntax: HELO hostname"),
    ("HELP DATA", "250 Syntax: DATA"),
    ("HELP RSET", "250 Syntax: RSET"),
    ("HELP NOOP", "250 Syntax: NOOP"),
    ("HELP QUIT", "250 Syntax: QUIT"),
    ("HELP VRFY", "250 Syntax: VRFY <address>"),
    ("HELP EXPN", "501 " + SUPPORTED),
    ("HELP HELP", "501 " + SUPPORTED),
    ("HELP BOGUS", "501 " + SUPPORTED),
    ("HELP MAIL FROM", "501 " + SUPPORTED),
    ("HELO", "501 Syntax: HELO hostname"),
    ("HELO ", "501 Syntax: HELO hostname"),
    ("EHLO", "501 Syntax: EHLO hostname"),
    ("ehlo  ", "501 Syntax: EHLO hostname"),
    ("FOO", '500 Error: command "FOO" not recognized'),
    ("foo bar baz", '500 Error: command "FOO" not recognized'),
    ("HELO\tclient", '500 Error: command "HELO\tCLIENT" not recognized'),
    ("straße", '500 Error: command "STRASSE" not recognized'),
    ("", "500 Error: bad syntax"),
    (" ", '500 Error: command "" not recognized'),
    (" NOOP", '500 Error: command "" not recognized'),
]


@pytest.mark.parametrize("line, expected", REPLIES_IN_EVERY_STATE,
                         ids=[repr(line) for line, _ in REPLIES_IN_EVERY_STATE])
def test_reply_in_every_state(greeted, line, expected):
    assert greeted.cmd(line) == wire(expected)
    # The session goes on as before.
    assert greeted.cmd("NOOP") == wire("250 OK")


# Replies that depend on whether HELO or EHLO has been seen.
REPLIES_BY_PHASE = [
    ("HELP MAIL", {"fresh": "250 Syntax: MAIL FROM: <address>",
                   "helo": "250 Syntax: MAIL FROM: <address>",
                   "ehlo": "250 Syntax: MAIL FROM: <address>" + EXTENDED}),
    ("help rcpt", {"fresh": "250 Syntax: RCPT TO: <address>",
                   "helo": "250 Syntax: RCPT TO: <address>",
                   "ehlo": "250 Syntax: RCPT TO: <address>" + EXTENDED}),
    ("MAIL FROM:<a@example.org>",
     {"fresh": SEND_HELO, "helo": "250 OK", "ehlo": "250 OK"}),
    ("MAIL", {"fresh": SEND_HELO, "helo": SYNTAX_MAIL,
              "ehlo": SYNTAX_MAIL + EXTENDED}),
    ("RCPT TO:<b@example.org>",
     {"fresh": SEND_HELO, "helo": "503 Error: need MAIL command",
      "ehlo": "503 Error: need MAIL command"}),
    # The missing MAIL is reported before the missing argument.
    ("RCPT", {"fresh": SEND_HELO, "helo": "503 Error: need MAIL command",
              "ehlo": "503 Error: need MAIL command"}),
    ("DATA", {"fresh": SEND_HELO, "helo": "503 Error: need RCPT command",
              "ehlo": "503 Error: need RCPT command"}),
    ("DATA now", {"fresh": SEND_HELO, "helo": "503 Error: need RCPT command",
                  "ehlo": "503 Error: need RCPT command"}),
    ("HELO again.example", {"fresh": f"250 {FQDN}",
                            "helo": "503 Duplicate HELO/EHLO",
                            "ehlo": "503 Duplicate HELO/EHLO"}),
    ("EHLO again.example", {"fresh": None,   # None: this configuration's EHLO reply
                            "helo": "503 Duplicate HELO/EHLO",
                            "ehlo": "503 Duplicate HELO/EHLO"}),
]


@pytest.mark.parametrize("line, expected", REPLIES_BY_PHASE,
                         ids=[line for line, _ in REPLIES_BY_PHASE])
def test_reply_by_phase(greeted, phase, config, line, expected):
    reply = expected[phase]
    want = EHLO_REPLY[config.name] if reply is None else wire(reply)
    assert greeted.cmd(line) == want


@pytest.mark.parametrize("line", ["QUIT", "quit", "QUIT now"])
def test_quit_replies_and_closes(greeted, line):
    assert greeted.cmd(line) == wire("221 Bye")
    assert greeted.at_eof()


def test_greeting_is_kept_across_rset(client, config):
    assert client.cmd("EHLO one.example") == EHLO_REPLY[config.name]
    assert client.cmd("HELO two.example") == wire("503 Duplicate HELO/EHLO")
    assert client.cmd("RSET") == wire("250 OK")
    assert client.cmd("EHLO three.example") == wire("503 Duplicate HELO/EHLO")
    assert client.cmd("MAIL FROM:<a@example.org>") == wire("250 OK")


# ---------------------------------------------------------------------------
# MAIL and RCPT

MAIL_ADDRESSES = [
    ("FROM:<a@example.org>", "a@example.org"),
    ("from:<a@example.org>", "a@example.org"),
    ("FROM: <a@example.org>", "a@example.org"),
    ("FROM:a@example.org", "a@example.org"),
    ("FROM:<>", "<>"),
    ('FROM:<"x y"@example.org>', '"x y"@example.org'),
    ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
    ("FROM:postmaster", "postmaster"),
    ("FROM:(comment)a@example.org", "a@example.org"),
    ("FROM:a b", '"a b"'),
]


@pytest.mark.parametrize("how", ["HELO", "EHLO"])
@pytest.mark.parametrize("arg, mailfrom", MAIL_ADDRESSES,
                         ids=[arg for arg, _ in MAIL_ADDRESSES])
def test_mail_address(server, client, config, how, arg, mailfrom):
    greet(client, how, config)
    assert client.cmd("MAIL " + arg) == wire("250 OK")
    assert server.channel(client).mailfrom == mailfrom


MAIL_SYNTAX_ERRORS = [
    "MAIL FROM:",
    "MAIL FROM",
    "MAIL from :<a@example.org>",
    "MAIL TO:<a@example.org>",
    "MAIL <a@example.org>",
    "MAIL FROM:<a@example.org>>",
    "MAIL FROM:<a@example.org> SIZE=",
    "MAIL FROM:<a@example.org> =7BIT",
    "MAIL FROM:<a@example.org> X-FOO=1",
    "MAIL FROM:<a@example.org> SIZE=abc",
    "MAIL FROM:<a@example.org> SIZE=-1",
]


@pytest.mark.parametrize("how", ["HELO", "EHLO"])
@pytest.mark.parametrize("line", MAIL_SYNTAX_ERRORS)
def test_mail_syntax_error(client, config, how, line):
    greet(client, how, config)
    suffix = EXTENDED if how == "EHLO" else ""
    assert client.cmd(line) == wire(SYNTAX_MAIL + suffix)
    assert client.cmd("RCPT TO:<b@example.org>") == wire(
        "503 Error: need MAIL command")


@pytest.mark.parametrize("params", ["SIZE=10", "BODY=7BIT", "SMTPUTF8", "FOO"])
def test_mail_parameters_need_ehlo(client, config, params):
    greet(client, "HELO", config)
    assert client.cmd("MAIL FROM:<a@example.org> " + params) == wire(SYNTAX_MAIL)
    assert client.cmd("RCPT TO:<b@example.org> " + params) == wire(
        "503 Error: need MAIL command")


OK = "250 OK"
NOT_IMPLEMENTED = "555 MAIL FROM parameters not recognized or not implemented"
BAD_BODY = "501 Error: BODY can only be one of 7BIT, 8BITMIME"
TOO_BIG = "552 Error: message size exceeds fixed maximum message size"
SMTPUTF8_ARG = "501 Error: SMTPUTF8 takes no arguments"
SYNTAX_EXT = SYNTAX_MAIL + EXTENDED

# MAIL parameters after EHLO: (parameters, reply, replies that differ by
# configuration).  BODY is only known when decode_data is False, SMTPUTF8
# only when enabled, and the checks run in that order, SIZE last.
MAIL_PARAMETERS = [
    ("BODY=7BIT", OK, {"str": NOT_IMPLEMENTED}),
    ("body=8bitmime", OK, {"str": NOT_IMPLEMENTED}),
    ("BODY=9BIT", BAD_BODY, {"str": NOT_IMPLEMENTED}),
    ("BODY", BAD_BODY, {"str": NOT_IMPLEMENTED}),
    ("BODY=9BIT FOO=1", BAD_BODY, {"str": NOT_IMPLEMENTED}),
    ("BODY=9BIT SIZE=abc", BAD_BODY, {"str": SYNTAX_EXT}),
    ("SMTPUTF8", NOT_IMPLEMENTED, {"smtputf8": OK}),
    ("smtputf8", NOT_IMPLEMENTED, {"smtputf8": OK}),
    ("SMTPUTF8=YES", NOT_IMPLEMENTED, {"smtputf8": SMTPUTF8_ARG}),
    ("SMTPUTF8=YES SIZE=abc", SYNTAX_EXT, {"smtputf8": SMTPUTF8_ARG}),
    ("SIZE=1000", OK, {}),
    ("SIZE=0", OK, {}),
    ("SIZE=33554432", OK, {}),
    ("SIZE=33554433", TOO_BIG, {"nolimit": OK}),
    ("SIZE=99999999999 FOO=1", TOO_BIG, {"nolimit": NOT_IMPLEMENTED}),
    ("SIZE=1000 FOO=BAR", NOT_IMPLEMENTED, {}),
    ("FOO=BAR", NOT_IMPLEMENTED, {}),
    ("XFOO", NOT_IMPLEMENTED, {}),
    ("BODY=8BITMIME SMTPUTF8 SIZE=10", NOT_IMPLEMENTED, {"smtputf8": OK}),
    ("BODY=8BITMIME SIZE=10", OK, {"str": NOT_IMPLEMENTED}),
]


@pytest.mark.parametrize("params, reply, by_config", MAIL_PARAMETERS,
                         ids=[params for params, _, _ in MAIL_PARAMETERS])
def test_mail_parameters_after_ehlo(client, config, params, reply, by_config):
    greet(client, "EHLO", config)
    expected = by_config.get(config.name, reply)
    assert client.cmd("MAIL FROM:<a@example.org> " + params) == wire(expected)
    # Only an accepted MAIL starts a transaction.
    after = OK if expected == OK else "503 Error: need MAIL command"
    assert client.cmd("RCPT TO:<b@example.org>") == wire(after)


def test_nested_mail(client, config):
    greet(client, "EHLO", config)
    assert client.cmd("MAIL FROM:<a@example.org>") == wire(OK)
    assert client.cmd("MAIL FROM:<c@example.org>") == wire(
        "503 Error: nested MAIL command")
    # Syntax is checked before nesting, parameters after it.
    assert client.cmd("MAIL FROM:") == wire(SYNTAX_EXT)
    assert client.cmd("MAIL FROM:<c@example.org> FOO=1") == wire(
        "503 Error: nested MAIL command")


def test_nested_mail_after_helo_checks_parameters_first(client, config):
    greet(client, "HELO", config)
    assert client.cmd("MAIL FROM:<a@example.org>") == wire(OK)
    assert client.cmd("MAIL FROM:<c@example.org> SIZE=1") == wire(SYNTAX_MAIL)
    assert client.cmd("MAIL FROM:<c@example.org>") == wire(
        "503 Error: nested MAIL command")


SYNTAX_RCPT_EXT = SYNTAX_RCPT + EXTENDED
RCPT_NOT_IMPLEMENTED = "555 RCPT TO parameters not recognized or not implemented"

# RCPT after MAIL: (line, reply after HELO, reply after EHLO).
RCPT_REPLIES = [
    ("RCPT TO:<b@example.org>", OK, OK),
    ("rcpt to: <b@example.org>", OK, OK),
    ("RCPT TO:b@example.org", OK, OK),
    ("RCPT", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
    ("RCPT TO:", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
    ("RCPT TO", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
    ("RCPT FROM:<b@example.org>", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
    ("RCPT TO:<b@example.org> FOO=1", SYNTAX_RCPT, RCPT_NOT_IMPLEMENTED),
    ("RCPT TO:<b@example.org> SIZE=10", SYNTAX_RCPT, RCPT_NOT_IMPLEMENTED),
    ("RCPT TO:<b@example.org> NOTIFY", SYNTAX_RCPT, RCPT_NOT_IMPLEMENTED),
    ("RCPT TO:<b@example.org> X-Y", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
    ("RCPT TO:<b@example.org> A=", SYNTAX_RCPT, SYNTAX_RCPT_EXT),
]


@pytest.mark.parametrize("how", ["HELO", "EHLO"])
@pytest.mark.parametrize("line, after_helo, after_ehlo", RCPT_REPLIES,
                         ids=[line for line, _, _ in RCPT_REPLIES])
def test_rcpt(server, client, config, how, line, after_helo, after_ehlo):
    greet(client, how, config)
    assert client.cmd("MAIL FROM:<a@example.org>") == wire(OK)
    expected = after_helo if how == "HELO" else after_ehlo
    assert client.cmd(line) == wire(expected)
    rcpttos = ["b@example.org"] if expected == OK else []
    assert server.channel(client).rcpttos == rcpttos


def test_rcpt_accumulates_in_order(server, client, config):
    greet(client, "EHLO", config)
    send_envelope(client, rcpts=["<b@example.org>", "c@example.org",
                                 "<b@example.org>"])
    assert server.channel(client).rcpttos == [
        "b@example.org", "c@example.org", "b@example.org"]


def test_data_takes_no_argument(client, config):
    greet(client, "EHLO", config)
    send_envelope(client)
    assert client.cmd("DATA now") == wire("501 Syntax: DATA")
    assert client.cmd("DATA") == wire("354 End data with <CR><LF>.<CR><LF>")


def test_data_needs_rcpt_after_mail(client, config):
    greet(client, "HELO", config)
    assert client.cmd("MAIL FROM:<a@example.org>") == wire(OK)
    assert client.cmd("DATA") == wire("503 Error: need RCPT command")


# ---------------------------------------------------------------------------
# Size accounting

TOO_LONG = "500 Error: line too long"


def padded(line, size):
    """`line` padded with spaces to `size` bytes (arguments are stripped)."""
    return line.encode("utf-8").ljust(size)


@deviation("bad-utf8-command")
def test_command_not_utf8_is_bad_syntax_up_to_the_limit():
    # The same limit as for a line that decodes: 512 bytes are bad syntax,
    # 513 too long.
    with session() as (srv, client):
        assert client.cmd(b"\xff" * 512) == wire("500 Error: bad syntax")
        assert client.cmd(b"\xff" * 513) == wire(TOO_LONG)
        assert client.cmd("NOOP") == wire(OK)


@pytest.mark.parametrize("how", [None, "HELO", "EHLO"])
def test_command_line_limit_is_512(client, config, how):
    if how:
        greet(client, how, config)
    assert client.cmd(padded("NOOP", 512)) == wire(OK)
    assert client.cmd(padded("NOOP", 513)) == wire(TOO_LONG)
    assert client.cmd(b"NOOP " + b"x" * 5000) == wire(TOO_LONG)
    # The limit counts bytes, not characters.
    assert client.cmd(padded("NOOP", 510) + "é".encode()) == wire(
        "501 Syntax: NOOP")
    assert client.cmd(padded("NOOP", 511) + "é".encode()) == wire(TOO_LONG)
    assert client.cmd("NOOP") == wire(OK)


def test_line_length_is_checked_before_the_command(client):
    assert client.cmd(padded("MAIL FROM:<a@example.org>", 512)) == wire(SEND_HELO)
    assert client.cmd(padded("MAIL FROM:<a@example.org>", 513)) == wire(TOO_LONG)
    assert client.cmd(padded("XYZZY", 513)) == wire(TOO_LONG)


def mail_line_limit(config):
    """RFC 1870 and RFC 6531 each let a MAIL line after EHLO grow."""
    limit = 512
    if config.data_size_limit:
        limit += 26
    if config.enable_SMTPUTF8:
        limit += 10
    return limit


def test_mail_line_limit_after_ehlo(client, config):
    greet(client, "EHLO", config)
    limit = mail_line_limit(config)
    mail = "MAIL FROM:<a@example.org>"
    assert client.cmd(padded(mail, limit + 1)) == wire(TOO_LONG)
    assert client.cmd(padded(mail, limit)) == wire(OK)
    # Other commands keep 512.
    assert client.cmd(padded("RSET", 513)) == wire(TOO_LONG)
    assert client.cmd(padded("RSET", 512)) == wire(OK)


def test_mail_line_limit_after_helo(client, config):
    greet(client, "HELO", config)
    assert client.cmd(padded("MAIL FROM:<a@example.org>", 513)) == wire(TOO_LONG)
    assert client.cmd(padded("MAIL FROM:<a@example.org>", 512)) == wire(OK)


@pytest.mark.parametrize("decode_data", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("body, reply", [
    (b"x" * 100, OK),
    (b"x" * 49 + b"\r\n" + b"x" * 49, OK),
    ("é".encode() * 50, OK),
    (b"x" * 101, "552 Error: Too much mail data"),
    ("é".encode() * 50 + b"x", "552 Error: Too much mail data"),
    (b"x" * 5000, "552 Error: Too much mail data"),
], ids=["100", "100-with-crlf", "100-utf8", "101", "101-utf8", "5000"])
def test_data_size_limit(decode_data, body, reply):
    with session(data_size_limit=100, decode_data=decode_data) as (srv, client):
        assert client.cmd("EHLO client.example") == wire(
            f"250-{FQDN}", "250-SIZE 100",
            *([] if decode_data else ["250-8BITMIME"]), "250 HELP")
        assert client.cmd("MAIL FROM:<a@example.org> SIZE=101") == wire(TOO_BIG)
        assert client.cmd("MAIL FROM:<a@example.org> SIZE=100") == wire(OK)
        assert client.cmd("RCPT TO:<b@example.org>") == wire(OK)
        assert send_data(client, body + b"\r\n.\r\n") == wire(reply)
        data = body.replace(b"\r\n", b"\n")
        expected = [data.decode() if decode_data else data] if reply == OK else []
        assert [m.data for m in srv.server.messages] == expected


@pytest.mark.parametrize("limit", [None, 0])
def test_no_data_size_limit(limit):
    with session(data_size_limit=limit) as (srv, client):
        assert client.cmd("EHLO client.example") == wire(
            f"250-{FQDN}", "250-8BITMIME", "250 HELP")
        assert client.cmd("MAIL FROM:<a@example.org> SIZE=99999999999") == wire(OK)
        assert srv.channel(client).max_command_size_limit == 512


# ---------------------------------------------------------------------------
# Message data: dot-unstuffing and line ends (RFC 5321, 4.5.2)

# (what the client sends after 354, what process_message gets as bytes)
DATA_CASES = [
    ("headers-and-body", b"Subject: hi\r\n\r\nHello\r\n.\r\n", b"Subject: hi\n\nHello"),
    ("leading-dots", b"..one\r\n.two\r\n...\r\n.\r\n", b".one\ntwo\n.."),
    ("double-dot-line", b"..\r\n.\r\n", b"."),
    ("dots-inside-lines", b"a.b\r\n .c\r\nd.\r\n.\r\n", b"a.b\n .c\nd."),
    ("empty", b"\r\n.\r\n", b""),
    ("one-empty-line", b"\r\n\r\n.\r\n", b"\n"),
    ("trailing-empty-lines", b"x\r\n\r\n\r\n.\r\n", b"x\n\n"),
    ("bare-lf-and-cr-kept", b"a\nb\rc\r\n.\r\n", b"a\nb\rc"),
    # The CRLF that ends the DATA line does not start the end marker.
    ("dot-line-first", b".\r\nmore\r\n.\r\n", b"\nmore"),
    ("utf8", "Grüße\r\n.\r\n".encode(), "Grüße".encode()),
    ("long-line", b"x" * 5000 + b"\r\n.\r\n", b"x" * 5000),
]


@pytest.mark.parametrize("sent, data", [case[1:] for case in DATA_CASES],
                         ids=[case[0] for case in DATA_CASES])
def test_message_data(server, client, config, sent, data):
    greet(client, "EHLO", config)
    send_envelope(client)
    assert send_data(client, sent) == wire(OK)
    [message] = server.server.messages
    assert type(message.data) is (str if config.decode_data else bytes)
    assert message.data == config.text(data)


def test_eight_bit_data_is_passed_unchanged_as_bytes(server, client, config):
    if config.decode_data:
        pytest.skip("undecodable data in str mode is a deviation (split-utf8)")
    greet(client, "EHLO", config)
    send_envelope(client)
    assert send_data(client, b"\xff\xfe\x80\r\n.\r\n") == wire(OK)
    assert server.server.messages[0].data == b"\xff\xfe\x80"


def test_end_marker_split_across_reads():
    with session() as (srv, client):
        greet(client, "EHLO", BYTES)
        send_envelope(client)
        assert client.cmd("DATA") == wire("354 End data with <CR><LF>.<CR><LF>")
        client.send(b"hello\r\n.")
        channel = srv.channel(client)
        wait_for(lambda: channel.num_bytes >= 5)
        assert srv.server.messages == []
        client.send(b"\r\n")
        assert client.reply() == wire(OK)
        assert srv.server.messages[0].data == b"hello"


@deviation("split-utf8")
def test_message_not_utf8_is_refused_and_its_rest_not_kept():
    with session(decode_data=True) as (srv, client):
        channel = srv.channel(client)
        greet(client, "HELO", STR)
        send_envelope(client)
        assert client.cmd("DATA") == wire("354 End data with <CR><LF>.<CR><LF>")
        # Two reads: an invalid UTF-8 sequence in the first, more text of the
        # same message in the second.
        first, second = b"Subject: caf\xe9 au lait", b"\r\n\r\nand more text"
        client.send(first)
        wait_for(lambda: channel.num_bytes == len(first))
        client.send(second)
        wait_for(lambda: channel.num_bytes == len(first) + len(second))
        # The message is known to be refused: none of it is kept meanwhile.
        assert channel.received_lines == []
        client.send(b"\r\n.\r\n")
        assert client.reply() == wire("554 Error: message data is not valid UTF-8")
        assert client.cmd("NOOP") == wire(OK)
    assert srv.server.messages == []


# ---------------------------------------------------------------------------
# process_message: arguments and return value

# What each configuration sends as MAIL parameters, and gets as mail_options.
MAIL_OPTIONS = {
    "bytes": ("size=20 body=8bitmime", ["SIZE=20", "BODY=8BITMIME"]),
    "str": ("size=20", None),
    "smtputf8": ("size=20 body=8bitmime smtputf8",
                 ["SIZE=20", "BODY=8BITMIME", "SMTPUTF8"]),
    "nolimit": ("Size=20 Body=7bit", ["SIZE=20", "BODY=7BIT"]),
}


def test_process_message_arguments(server, client, config):
    params, mail_options = MAIL_OPTIONS[config.name]
    greet(client, "EHLO", config)
    assert client.cmd("MAIL FROM:<a@example.org> " + params) == wire(OK)
    assert client.cmd("RCPT TO:<b@example.org>") == wire(OK)
    assert client.cmd("RCPT TO:c@example.org") == wire(OK)
    assert send_data(client, b"Hi\r\n.\r\n") == wire(OK)
    [message] = server.server.messages
    assert type(message.peer) is tuple
    assert message.peer == client.address
    assert message.mailfrom == "a@example.org"
    assert type(message.rcpttos) is list
    assert message.rcpttos == ["b@example.org", "c@example.org"]
    assert message.data == config.text(b"Hi")
    if config.decode_data:
        assert message.kwargs == {}
    else:
        assert message.kwargs == {"mail_options": mail_options,
                                  "rcpt_options": []}


def test_options_are_empty_after_helo(server, client, config):
    greet(client, "HELO", config)
    send_envelope(client)
    assert send_data(client, b"Hi\r\n.\r\n") == wire(OK)
    expected = {} if config.decode_data else {"mail_options": [],
                                              "rcpt_options": []}
    assert server.server.messages[0].kwargs == expected


def test_rcpt_options_come_from_the_last_rcpt_even_refused():
    # 3.11 stores the options before it checks them.
    with session() as (srv, client):
        greet(client, "EHLO", BYTES)
        send_envelope(client)
        assert client.cmd("RCPT TO:<c@example.org> xfoo=1") == wire(
            RCPT_NOT_IMPLEMENTED)
        assert send_data(client, b"Hi\r\n.\r\n") == wire(OK)
        [message] = srv.server.messages
        assert message.rcpttos == ["b@example.org"]
        assert message.kwargs == {"mail_options": [], "rcpt_options": ["XFOO=1"]}


def test_non_ascii_envelope_with_smtputf8():
    with session(enable_SMTPUTF8=True) as (srv, client):
        greet(client, "EHLO", UTF8)
        assert client.cmd("MAIL FROM:<jörg@example.org> SMTPUTF8") == wire(OK)
        assert client.cmd("RCPT TO:<ünï@exämple.org>") == wire(OK)
        # With SMTPUTF8 required, replies may be UTF-8.
        assert client.cmd("écho") == wire('500 Error: command "ÉCHO" not recognized')
        assert send_data(client, "Grüße\r\n.\r\n".encode()) == wire(OK)
        [message] = srv.server.messages
        assert (message.mailfrom, message.rcpttos) == (
            "jörg@example.org", ["ünï@exämple.org"])
        assert message.data == "Grüße".encode()
        assert message.kwargs == {"mail_options": ["SMTPUTF8"], "rcpt_options": []}


def test_smtputf8_is_required_even_if_mail_is_refused():
    # 3.11 notes SMTPUTF8 before it checks the other parameters.
    with session(enable_SMTPUTF8=True) as (srv, client):
        greet(client, "EHLO", UTF8)
        assert client.cmd("MAIL FROM:<a@example.org> SMTPUTF8 SIZE=abc") == wire(
            SYNTAX_EXT)
        assert srv.channel(client).require_SMTPUTF8 is True
        assert srv.channel(client).mailfrom is None
        assert client.cmd("écho") == wire('500 Error: command "ÉCHO" not recognized')
        assert client.cmd("RSET") == wire(OK)
        assert srv.channel(client).require_SMTPUTF8 is False


def test_smtputf8_is_not_required_by_mail_without_it():
    with session(enable_SMTPUTF8=True) as (srv, client):
        greet(client, "EHLO", UTF8)
        assert client.cmd("MAIL FROM:<a@example.org>") == wire(OK)
        assert srv.channel(client).require_SMTPUTF8 is False


@pytest.mark.parametrize("returned, reply", [
    (None, wire(OK)),
    ("", wire(OK)),
    ("554 Transaction failed", wire("554 Transaction failed")),
    ("250-first\r\n250 second", wire("250-first", "250 second")),
])
def test_process_message_return_value(returned, reply):
    with session() as (srv, client):
        srv.server.reply = returned
        greet(client, "HELO", BYTES)
        send_envelope(client)
        assert send_data(client, b"Hi\r\n.\r\n") == reply
        assert client.cmd("NOOP") == wire(OK)


def test_several_messages_in_one_session(server, client, config):
    greet(client, "EHLO", config)
    send_envelope(client, "<a@example.org>", ["<b@example.org>"])
    assert send_data(client, b"one\r\n.\r\n") == wire(OK)
    # The transaction is over, the greeting is kept.
    assert client.cmd("RCPT TO:<c@example.org>") == wire(
        "503 Error: need MAIL command")
    assert client.cmd("DATA") == wire("503 Error: need RCPT command")
    send_envelope(client, "<c@example.org>", ["<d@example.org>", "<e@example.org>"])
    assert send_data(client, b"two\r\n.\r\n") == wire(OK)
    assert [(m.mailfrom, m.rcpttos, m.data) for m in server.server.messages] == [
        ("a@example.org", ["b@example.org"], config.text(b"one")),
        ("c@example.org", ["d@example.org", "e@example.org"], config.text(b"two")),
    ]


def test_rset_ends_the_transaction(server, client, config):
    greet(client, "EHLO", config)
    send_envelope(client, "<a@example.org>", ["<b@example.org>"])
    assert client.cmd("RSET") == wire(OK)
    assert client.cmd("RCPT TO:<c@example.org>") == wire(
        "503 Error: need MAIL command")
    assert client.cmd("DATA") == wire("503 Error: need RCPT command")
    send_envelope(client, "<c@example.org>", ["<d@example.org>"])
    assert send_data(client, b"x\r\n.\r\n") == wire(OK)
    [message] = server.server.messages
    assert (message.mailfrom, message.rcpttos) == ("c@example.org", ["d@example.org"])


# ---------------------------------------------------------------------------
# Channel attributes that subclasses read

def test_class_attributes():
    cls = smtpd.SMTPChannel
    assert (cls.COMMAND, cls.DATA) == (0, 1)
    assert cls.command_size_limit == 512
    assert isinstance(cls.command_size_limits, collections.defaultdict)
    assert cls.command_size_limits.default_factory() == 512
    assert isinstance(inspect.getattr_static(cls, "max_command_size_limit"),
                      property)
    assert smtpd.SMTPServer.channel_class is cls


def test_channel_attributes(server, client, config):
    channel = server.channel(client)
    assert type(channel) is smtpd.SMTPChannel
    assert channel.smtp_server is server.server
    assert channel.conn.getpeername() == client.address
    assert channel.conn.getsockname() == server.address
    assert channel.addr == client.address
    assert channel.peer == client.address
    assert channel.fqdn == FQDN
    assert channel.data_size_limit == config.data_size_limit
    assert channel.enable_SMTPUTF8 == config.enable_SMTPUTF8
    assert channel.smtp_state == channel.COMMAND
    assert channel.seen_greeting == ""
    assert channel.extended_smtp is False
    assert channel.mailfrom is None
    assert channel.rcpttos == []
    assert channel.received_lines == []
    assert channel.received_data == ""
    assert channel.num_bytes == 0
    assert channel.require_SMTPUTF8 is False
    assert channel.max_command_size_limit == 512

    # A command line in progress.
    client.send("NOO")
    wait_for(lambda: channel.received_lines)
    assert channel.received_lines == [config.text(b"NOO")]
    assert channel.num_bytes == 3
    assert client.cmd("P") == wire(OK)
    assert (channel.received_lines, channel.num_bytes) == ([], 0)

    greet(client, "EHLO", config)
    assert channel.seen_greeting == "client.example"
    assert channel.extended_smtp is True
    assert channel.max_command_size_limit == mail_line_limit(config)
    if config.data_size_limit or config.enable_SMTPUTF8:
        assert channel.command_size_limits["MAIL"] == mail_line_limit(config)

    mail = "MAIL FROM:<a@example.org>"
    if config.enable_SMTPUTF8:
        mail += " SMTPUTF8"
    assert client.cmd(mail) == wire(OK)
    assert channel.mailfrom == "a@example.org"
    assert channel.require_SMTPUTF8 is config.enable_SMTPUTF8
    assert client.cmd("RCPT TO:<b@example.org>") == wire(OK)
    assert channel.rcpttos == ["b@example.org"]
    assert client.cmd("DATA") == wire("354 End data with <CR><LF>.<CR><LF>")
    assert channel.smtp_state == channel.DATA

    client.send("Hi")
    wait_for(lambda: channel.received_lines)
    assert channel.received_lines == [config.text(b"Hi")]
    assert channel.num_bytes == (2 if config.data_size_limit else 0)
    client.send("\r\n.\r\n")
    assert client.reply() == wire(OK)
    # The post-DATA state: the message is kept, the envelope is not.
    assert channel.smtp_state == channel.COMMAND
    assert channel.received_data == config.text(b"Hi")
    assert (channel.mailfrom, channel.rcpttos) == (None, [])
    assert channel.require_SMTPUTF8 is False
    assert channel.num_bytes == 0
    assert channel.seen_greeting == "client.example"

    assert client.cmd("RSET") == wire(OK)
    assert channel.received_data == ""
    assert channel.received_lines == []
    assert channel.extended_smtp is True


# ---------------------------------------------------------------------------
# Deprecated name-mangled aliases

ALIASES = [
    ("__server", "smtp_server"),
    ("__line", "received_lines"),
    ("__state", "smtp_state"),
    ("__greeting", "seen_greeting"),
    ("__mailfrom", "mailfrom"),
    ("__rcpttos", "rcpttos"),
    ("__data", "received_data"),
    ("__fqdn", "fqdn"),
    ("__peer", "peer"),
    ("__conn", "conn"),
    ("__addr", "addr"),
]


@pytest.fixture
def bare_channel():
    """An SMTPChannel on a real loopback connection, outside any loop."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname(), timeout=CLIENT_TIMEOUT)
    conn, addr = listener.accept()
    channel = smtpd.SMTPChannel(object(), conn, addr, map={})
    yield channel
    channel.close()
    peer.close()
    listener.close()


@pytest.mark.parametrize("alias, name", ALIASES, ids=[a for a, _ in ALIASES])
def test_deprecated_alias_get(bare_channel, alias, name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        value = getattr(bare_channel, "_SMTPChannel" + alias)
    assert value is getattr(bare_channel, name)
    [warning] = caught
    assert warning.category is DeprecationWarning
    assert str(warning.message) == (
        f"Access to {alias} attribute on SMTPChannel is deprecated, "
        f"use '{name}' instead")
    # stacklevel 2: the warning names the caller's line.
    assert (warning.filename, warning.lineno) == (__file__, line)


@pytest.mark.parametrize("alias, name", ALIASES, ids=[a for a, _ in ALIASES])
def test_deprecated_alias_set(bare_channel, alias, name):
    marker = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        setattr(bare_channel, "_SMTPChannel" + alias, marker)
    assert getattr(bare_channel, name) is marker
    [warning] = caught
    assert warning.category is DeprecationWarning
    assert str(warning.message) == (
        f"Setting {alias} attribute on SMTPChannel is deprecated, "
        f"set '{name}' instead")
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_introspecting_smtpchannel_gives_no_deprecation_warning():
    names = ["_SMTPChannel" + alias for alias, _ in ALIASES]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = dict(inspect.getmembers(smtpd.SMTPChannel))
        aliases = [getattr(smtpd.SMTPChannel, name) for name in names]
    # On the class, each old name is its descriptor (what help() and
    # inspect list), not a warning and an AttributeError.
    assert all(inspect.isdatadescriptor(alias) for alias in aliases)
    assert [members[name] for name in names] == aliases


# ---------------------------------------------------------------------------
# Subclassing and construction

class CustomChannel(smtpd.SMTPChannel):
    """Overrides one command and adds another."""

    def __init__(self, server, conn, addr, *args, **kwargs):
        server.channel_args = (args, kwargs)
        super().__init__(server, conn, addr, *args, **kwargs)

    def smtp_NOOP(self, arg):
        self.push("250 custom NOOP %s" % (arg or "-"))

    def smtp_XSTATE(self, arg):
        self.push("250 state=%d greeting=%s" % (self.smtp_state,
                                                self.seen_greeting or "-"))

    def smtp_XCONFUSE(self, arg):
        self.smtp_state = 2         # neither COMMAND nor DATA
        self.push("250 confused")


class CustomServer(RecordingServer):
    channel_class = CustomChannel


def test_channel_class_subclass():
    with session(CustomServer, data_size_limit=1000) as (srv, client):
        assert type(srv.channel(client)) is CustomChannel
        # The server passes everything after addr positionally.
        assert srv.server.channel_args == (
            (1000, srv.map, False, False), {})
        assert client.cmd("NOOP") == wire("250 custom NOOP -")
        assert client.cmd("noop x y") == wire("250 custom NOOP x y")
        assert client.cmd("xstate") == wire("250 state=0 greeting=-")
        greet(client, "HELO", BYTES)
        assert client.cmd("XSTATE") == wire("250 state=0 greeting=client.example")
        assert client.cmd("HELP") == wire("250 " + SUPPORTED)
        assert client.cmd("XNOPE") == wire('500 Error: command "XNOPE" not recognized')
        # A state the base class does not know: every line gets this.
        assert client.cmd("XCONFUSE") == wire("250 confused")
        assert client.cmd("NOOP") == wire("451 Internal confusion")
        assert client.cmd("") == wire("451 Internal confusion")
        # The confused line's bytes are not counted against the next one.
        assert srv.channel(client).num_bytes == 0


class PresetLimitsChannel(smtpd.SMTPChannel):
    command_size_limits = collections.defaultdict(lambda: 512, {"NOOP": 5000})


class PresetLimitsServer(RecordingServer):
    channel_class = PresetLimitsChannel


def test_channel_starts_with_no_command_size_limits_of_its_own():
    # As in 3.11, which cleared the class's dict in __init__: limits preset
    # on a subclass do not survive into a session; only EHLO sets them.
    with session(PresetLimitsServer) as (srv, client):
        assert dict(srv.channel(client).command_size_limits) == {}
        greet(client, "EHLO", BYTES)
        assert client.cmd(padded("NOOP", 600)) == wire(TOO_LONG)


def test_server_socket_reuses_its_address():
    # A restarted server binds while the old one's connections linger.
    with ServerThread() as running:
        sock = running.server.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


class Channel311(smtpd.SMTPChannel):
    """found_terminator() as a subclass written for 3.11 has it.

    Such subclasses copied 3.11's method whole to change a step of it, so
    they use the attributes 3.11's __init__ set up for it: _emptystring,
    _linesep and _newline, and _dotsep, the dot as indexing a line gives it
    (the str '.' with decode_data=True, the int ord('.') from bytes).  This
    one does what 3.11's did, step for step.
    """

    def found_terminator(self):
        line = self._emptystring.join(self.received_lines)
        self.received_lines = []
        print("Data:", repr(line), file=smtpd.DEBUGSTREAM)
        if self.smtp_state == self.COMMAND:
            self._command(line)
        elif self.smtp_state != self.DATA:
            self.push("451 Internal confusion")
            self.num_bytes = 0
        elif self.data_size_limit and self.num_bytes > self.data_size_limit:
            self.push("552 Error: Too much mail data")
            self.num_bytes = 0
        else:
            self._message(line)

    def _command(self, line):
        size, self.num_bytes = self.num_bytes, 0
        if not line:
            self.push("500 Error: bad syntax")
            return
        if not self._decode_data:
            line = str(line, "utf-8")
        command, space, arg = line.partition(" ")
        command = command.upper()
        arg = arg.strip() if space else None
        if self.extended_smtp:
            limit = self.command_size_limits[command]
        else:
            limit = self.command_size_limit
        if size > limit:
            self.push("500 Error: line too long")
            return
        method = getattr(self, "smtp_" + command, None)
        if method is None:
            self.push('500 Error: command "%s" not recognized' % command)
        else:
            method(arg)

    def _message(self, data):
        # A line that starts with a dot loses it (RFC 5321, 4.5.2), and the
        # lines are joined with _newline instead of CRLF.
        lines = [text[1:] if text and text[0] == self._dotsep else text
                 for text in data.split(self._linesep)]
        self.received_data = self._newline.join(lines)
        kwargs = {}
        if not self._decode_data:
            kwargs = {"mail_options": self.mail_options,
                      "rcpt_options": self.rcpt_options}
        status = self.smtp_server.process_message(
            self.peer, self.mailfrom, self.rcpttos, self.received_data, **kwargs)
        self._set_post_data_state()
        self.push(status or "250 OK")


class Server311(RecordingServer):
    channel_class = Channel311


# Dot-stuffed lines, a line of two dots, a dot inside and after a blank,
# 8-bit text; and what 3.11's SMTPChannel delivers for them, as bytes.
DOT_STUFFED = b"..one\r\n.two\r\n...\r\n\r\nx.y\r\n .z\r\n..\r\n" + (
    "Grüße\r\n.\r\n".encode())
DOT_STUFFED_DATA = b".one\ntwo\n..\n\nx.y\n .z\n.\n" + "Grüße".encode()


@pytest.mark.parametrize("server_class", [RecordingServer, Server311],
                         ids=["SMTPChannel", "found_terminator-of-3.11"])
@pytest.mark.parametrize("mode", [BYTES, STR], ids=lambda mode: mode.name)
def test_subclass_with_found_terminator_of_3_11(server_class, mode):
    # The plain channel pins what 3.11 delivers (run against 3.11, the
    # oracle); the subclass must deliver the same with pysmtpd's attributes.
    with session(server_class, **mode.kwargs) as (srv, client):
        greet(client, "EHLO", mode)
        send_envelope(client)
        assert send_data(client, DOT_STUFFED) == wire(OK)
        assert client.cmd("NOOP") == wire(OK)
        assert [m.data for m in srv.server.messages] == [mode.text(DOT_STUFFED_DATA)]


BOTH_FLAGS = "decode_data and enable_SMTPUTF8 cannot be set to True at the same time"


def test_server_rejects_decode_data_with_smtputf8():
    with pytest.raises(ValueError) as info:
        smtpd.SMTPServer(("127.0.0.1", 0), None, map={},
                         decode_data=True, enable_SMTPUTF8=True)
    assert str(info.value) == BOTH_FLAGS


def test_channel_rejects_decode_data_with_smtputf8():
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()):
        conn, addr = listener.accept()
        with conn, pytest.raises(ValueError) as info:
            smtpd.SMTPChannel(None, conn, addr, map={},
                              decode_data=True, enable_SMTPUTF8=True)
    assert str(info.value) == BOTH_FLAGS


def test_pure_proxy_rejects_smtputf8():
    with pytest.raises(ValueError) as info:
        smtpd.PureProxy(("127.0.0.1", 0), None, map={}, enable_SMTPUTF8=True)
    assert str(info.value) == "PureProxy does not support SMTPUTF8."


def test_server_listens_on_the_resolvers_first_answer(monkeypatch):
    # A name with IPv6 and IPv4 addresses ('localhost' on many hosts) gets
    # the family getaddrinfo() puts first, as in 3.11.  Here '::1' is given a
    # second, IPv4, answer; only the first one can bind it.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        answers = real_getaddrinfo(host, port, *args, **kwargs)
        if host == "::1":
            answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "",
                            ("127.0.0.1", port)))
        return answers

    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with monkeypatch.context() as patch:
        patch.setattr(smtpd.socket, "getaddrinfo", getaddrinfo)
        running = ServerThread(localaddr=("::1", 0))
    assert running.server.socket.family == socket.AF_INET6
    with running:
        client = LineClient(running.address)
        try:
            assert client.greeting.startswith(b"220 ")
            assert client.cmd("NOOP") == b"250 OK\r\n"
        finally:
            client.close()


def test_server_bind_error_leaves_nothing_open():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        socket_map = {}
        with pytest.raises(OSError):
            smtpd.SMTPServer(taken.getsockname(), None, map=socket_map)
        assert socket_map == {}


def test_server_attributes():
    socket_map = {}
    server = smtpd.SMTPServer(("127.0.0.1", 0), ("127.0.0.1", 25), 1234,
                              socket_map, True)
    try:
        assert (server.data_size_limit, server.enable_SMTPUTF8) == (1234, True)
        assert list(socket_map.values()) == [server]
        assert server.accepting
        assert server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        server.close()


def test_base_process_message_is_abstract():
    server = smtpd.SMTPServer(("127.0.0.1", 0), None, map={})
    try:
        with pytest.raises(NotImplementedError):
            server.process_message(("127.0.0.1", 1), "a@example.org",
                                   ["b@example.org"], b"x",
                                   mail_options=[], rcpt_options=[])
    finally:
        server.close()


# ---------------------------------------------------------------------------
# Connections: Nagle's algorithm, the client's address, accept()

class RecordingConn:
    """A real accepted socket, wrapped: each send() is recorded."""

    def __init__(self, sock):
        self._sock = sock
        self.sends = []

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def send(self, data):
        sent = self._sock.send(data)
        self.sends.append(bytes(data[:sent]))
        return sent


class NoDelayRefused(RecordingConn):
    """A TCP socket whose setsockopt() fails."""

    def setsockopt(self, *args):
        raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))


class NotASocket(RecordingConn):
    """A socket-like object without a family (no setsockopt() is tried)."""

    def __getattr__(self, name):
        if name == "family":
            raise AttributeError(name)
        return super().__getattr__(name)


class PeerUnknown(RecordingConn):
    """A socket whose getpeername() fails with an error other than ENOTCONN."""

    def getpeername(self):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))


class WrappingServer(RecordingServer):
    """Gives each channel its accepted socket inside conn_class."""

    def __init__(self, *args, conn_class, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn_class = conn_class
        self.conns = []

    def handle_accepted(self, conn, addr):
        # Not RecordingServer's: it turns Nagle's algorithm off itself.
        self.conns.append(self.conn_class(conn))
        smtpd.SMTPServer.handle_accepted(self, self.conns[-1], addr)


@pytest.mark.skipif(ORACLE, reason="3.11 sends each line of a reply on its own")
def test_ehlo_reply_is_one_send_with_nagle_off():
    # With Nagle's algorithm on, each line after the first of a reply sent
    # line by line, as 3.11 sent them, waits for the client's delayed ACK
    # (40 ms on Linux).  So the server turns it off on its TCP sockets and
    # sends a whole reply at once: one segment, which one recv() reads.
    with session(WrappingServer, conn_class=RecordingConn) as (running, client):
        [conn] = running.server.conns
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.send("EHLO client.example\r\n")
        # The greeting, all that came before, has been read already.
        assert client.sock.recv(4096) == EHLO_REPLY["bytes"]
    # Read once the server's loop has stopped: it records each send() only
    # after the client may have had its bytes.
    assert conn.sends == [wire(f"220 {FQDN} {VERSION}"), EHLO_REPLY["bytes"]]


@pytest.mark.parametrize("conn_class", [NoDelayRefused, NotASocket],
                         ids=["setsockopt-fails", "not-a-socket"])
def test_session_works_where_nagle_cannot_be_turned_off(conn_class):
    with session(WrappingServer, conn_class=conn_class) as (running, client):
        replies = [client.greeting, client.cmd("EHLO client.example")]
        assert replies == [wire(f"220 {FQDN} {VERSION}"), EHLO_REPLY["bytes"]]
        for line in ("MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>"):
            replies.append(client.cmd(line))
        replies.append(client.cmd("DATA"))
        client.send(b"Subject: nagle\r\n\r\nHello.\r\n.\r\n")
        replies += [client.reply(), client.cmd("QUIT")]
        assert replies[2:] == [wire(OK), wire(OK),
                               wire("354 End data with <CR><LF>.<CR><LF>"),
                               wire(OK), wire("221 Bye")]
        assert client.at_eof()
        [conn] = running.server.conns
    assert [m.data for m in running.server.messages] == [b"Subject: nagle\n\nHello."]
    # The same bytes, but each line of a reply goes out in a send of its
    # own, as in 3.11: only with Nagle off are the lines of a reply joined
    # into one send.
    assert conn.sends == b"".join(replies).splitlines(keepends=True)


class HeldServer(RecordingServer):
    """Accepts no connection until the test sets `released`."""

    released = False

    def readable(self):
        return self.released and super().readable()


def _established(server_port, client_port):
    """Whether Linux still has the server's side of the connection open."""
    local = ":%04X" % server_port
    remote = ":%04X" % client_port
    with open("/proc/net/tcp") as table:
        next(table)
        return any(row.split()[1].endswith(local) and row.split()[2].endswith(remote)
                   and row.split()[3] == "01" for row in table)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="relies on how Linux reports a reset socket")


@linux_only
def test_client_gone_before_its_greeting_does_not_stop_the_server(monkeypatch):
    debug = io.StringIO()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", debug)
    with ServerThread(HeldServer) as running:
        # A client connects and resets the connection while it waits to be
        # accepted: accept() then gives a socket that has no peer any more,
        # and getpeername() fails with ENOTCONN.
        gone = socket.create_connection(running.address, timeout=CLIENT_TIMEOUT)
        gone_addr = gone.getsockname()
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        wait_for(lambda: not _established(running.address[1], gone_addr[1]))
        running.server.released = True
        wait_for(lambda: f"Incoming connection from {gone_addr!r}" in debug.getvalue())
        # The next client is served; the first left nothing open behind it.
        client = LineClient(running.address)
        try:
            assert client.greeting == wire(f"220 {FQDN} {VERSION}")
            assert sorted(type(obj).__name__ for obj in running.map.values()) == [
                "HeldServer", "SMTPChannel"]
            assert client.cmd("HELO client.example") == wire(f"250 {FQDN}")
            send_envelope(client)
            assert send_data(client, b"Subject: gone\r\n\r\nHello.\r\n.\r\n") == wire(OK)
        finally:
            client.close()
    log = debug.getvalue()
    assert f"Peer: {gone_addr!r}" not in log
    assert f"Peer: {client.address!r}" in log
    assert len(running.server.messages) == 1


def test_other_getpeername_error_goes_to_handle_error(capsys):
    with ServerThread(WrappingServer, conn_class=PeerUnknown) as running:
        with socket.create_connection(running.address,
                                      timeout=CLIENT_TIMEOUT) as client:
            # No greeting: the channel was closed.
            assert client.recv(1024) == b""
        # As in 3.11, asyncore's handle_error logs the exception, and the
        # listening server closes.
        wait_for(lambda: not running.map)
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel ")
    assert "(<class 'OSError'>:[Errno %d] %s " % (
        errno.EINVAL, os.strerror(errno.EINVAL)) in out
    [conn] = running.server.conns
    assert conn.fileno() == -1


@contextlib.contextmanager
def descriptors_exhausted():
    """Until the block ends, this process can open no descriptor (EMFILE).

    The soft RLIMIT_NOFILE comes down to the lowest free descriptor number.
    The garbage collector waits meanwhile: a socket it closed would free a
    number below the limit.
    """
    resource = pytest.importorskip("resource")
    gc.collect()
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    collecting = gc.isenabled()
    gc.disable()
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if collecting:
            gc.enable()


@deviation("accept-emfile")
def test_accept_out_of_descriptors_is_logged_and_waited_out(monkeypatch):
    # 3.11 wrote nothing to DEBUGSTREAM here: asyncore's handle_error logged
    # the OSError on stdout, and the server closed its listening socket.
    debug = io.StringIO()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", debug)
    with ServerThread() as running, socket.socket() as client:
        client.settimeout(CLIENT_TIMEOUT)
        with descriptors_exhausted():
            # The kernel queues the connection; accept() fails with EMFILE.
            client.connect(running.address)
            # The line on DEBUGSTREAM is all that shows the failed accept():
            # wait for a line after the three of "started at" (or time out,
            # and let the assertions below say what was written).
            with contextlib.suppress(AssertionError):
                wait_for(lambda: len(debug.getvalue().splitlines()) > 3)
        # Descriptors are free again: the client that waited is served.
        with client.makefile("rb") as replies:
            assert replies.readline() == wire(f"220 {FQDN} {VERSION}")
        peer = client.getsockname()
    # After the three lines of "RecordingServer started at": one line each
    # time accept() was tried (every 0.1 s) until descriptors were free.
    log = debug.getvalue().splitlines()
    cannot = "Cannot accept now: [Errno %d] %s" % (errno.EMFILE, os.strerror(errno.EMFILE))
    assert log[3] == cannot
    assert set(log[3:-2]) == {cannot}
    assert log[-2:] == [f"Incoming connection from {peer!r}", f"Peer: {peer!r}"]


class AcceptCounter:
    """Stands in for a listening server's accept() and handle_accepted().

    A unit test of handle_accept()'s arithmetic; the real accepts of many
    clients are tests/test_hostile.py's.
    """

    def __init__(self, server, error=None):
        self.accepts = 0
        self.error = error
        server.accept = self.accept
        server.handle_accepted = lambda conn, addr: None

    def accept(self):
        self.accepts += 1
        if self.error is not None:
            raise self.error
        return object(), ("127.0.0.1", self.accepts)


@pytest.mark.parametrize("connections, accepts", [(0, 1), (63, 1), (64, 64), (200, 64)])
def test_accepts_per_pass_of_the_loop(connections, accepts):
    # README: with many clients connected (more than 64 in the map besides
    # the listener), up to 64 are accepted per pass; else one, as in 3.11.
    map = {}
    server = smtpd.SMTPServer(("127.0.0.1", 0), None, map=map)
    try:
        map.update((-n, None) for n in range(1, connections + 1))
        counter = AcceptCounter(server)
        server.handle_accept()
        assert counter.accepts == accepts
    finally:
        server.close()


@deviation("accept-emfile")
def test_accept_pause_after_emfile_is_a_tenth_of_a_second(monkeypatch):
    now = [1000.0]
    # smtpd's own clock only: the time module is shared with every thread,
    # a module-scoped server's loop among them.
    monkeypatch.setattr(smtpd, "time", types.SimpleNamespace(
        monotonic=lambda: now[0], time=time.time, ctime=time.ctime))
    server = smtpd.SMTPServer(("127.0.0.1", 0), None, map={})
    try:
        AcceptCounter(server, OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
        assert server.readable()
        server.handle_accept()
        # The listening socket leaves the loop for 0.1 s, then comes back.
        assert not server.readable()
        now[0] = 1000.0 + 0.099
        assert not server.readable()
        now[0] = 1000.0 + 0.1
        assert server.readable()
    finally:
        server.close()


@linux_only
def test_accept_error_not_about_resources_goes_to_handle_error(capsys):
    with ServerThread() as running:
        # On Linux, accept() on a listening socket that was shut down fails
        # with EINVAL: not a lack of descriptors, so it is not waited out.
        running.server.socket.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: not running.map)
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel ")
    assert "(<class 'OSError'>:[Errno %d] %s " % (
        errno.EINVAL, os.strerror(errno.EINVAL)) in out


# ---------------------------------------------------------------------------
# DebuggingServer and DEBUGSTREAM

def debugging_session(decode_data, commands, body):
    """Run one session against a DebuggingServer; return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), \
            session(smtpd.DebuggingServer, decode_data=decode_data) as (srv, client):
        greet(client, "EHLO", STR if decode_data else BYTES)
        for line, reply in commands:
            assert client.cmd(line) == wire(reply)
        assert send_data(client, body) == wire(OK)
        assert client.cmd("QUIT") == wire("221 Bye")
    return out.getvalue()


BANNER = "---------- MESSAGE FOLLOWS ----------\n"
END_BANNER = "------------ END MESSAGE ------------\n"
DEBUG_BODY = b"Subject: hi\r\nX: y\r\n\r\nbody line\r\n\r\n..dot\r\n.\r\n"


def test_debugging_server_bytes():
    printed = debugging_session(False, [
        ("MAIL FROM:<a@example.org> body=8bitmime SIZE=50", OK),
        ("RCPT TO:<b@example.org>", OK),
        ("RCPT TO:<c@example.org> XFOO", RCPT_NOT_IMPLEMENTED),
    ], DEBUG_BODY)
    assert printed == (
        BANNER
        + "mail options: ['BODY=8BITMIME', 'SIZE=50']\n"
        + "rcpt options: ['XFOO']\n\n"
        + "b'Subject: hi'\nb'X: y'\nb'X-Peer: 127.0.0.1'\nb''\n"
        + "b'body line'\nb''\nb'.dot'\n"
        + END_BANNER)


def test_debugging_server_str():
    printed = debugging_session(True, [
        ("MAIL FROM:<a@example.org> SIZE=50", OK),
        ("RCPT TO:<b@example.org>", OK),
    ], DEBUG_BODY)
    assert printed == (
        BANNER
        + "Subject: hi\nX: y\nX-Peer: 127.0.0.1\n\nbody line\n\n.dot\n"
        + END_BANNER)


@pytest.mark.parametrize("decode_data, body, printed", [
    (False, b"no headers end\r\n.\r\n", "b'no headers end'\n"),
    (True, b"no headers end\r\n.\r\n", "no headers end\n"),
    (False, b"\r\n.\r\n", ""),
    (True, b"\r\n.\r\n", ""),
    # str.splitlines() also splits at form feeds; bytes.splitlines() not.
    (True, b"a\x0cb\r\n\r\nc\r\n.\r\n", "a\nb\nX-Peer: 127.0.0.1\n\nc\n"),
    (False, b"a\x0cb\r\n\r\nc\r\n.\r\n", "b'a\\x0cb'\nb'X-Peer: 127.0.0.1'\nb''\nb'c'\n"),
], ids=["bytes-no-blank-line", "str-no-blank-line", "bytes-empty", "str-empty",
        "str-form-feed", "bytes-form-feed"])
def test_debugging_server_edge_messages(decode_data, body, printed):
    commands = [("MAIL FROM:<a@example.org>", OK), ("RCPT TO:<b@example.org>", OK)]
    assert debugging_session(decode_data, commands, body) == (
        BANNER + printed + END_BANNER)


class CollectingDevnull(smtpd.Devnull):
    """A Devnull subclass that does keep what is written to it."""

    def __init__(self):
        self._parts = []

    def write(self, msg):
        self._parts.append(msg)

    def getvalue(self):
        return "".join(self._parts)


@pytest.mark.parametrize("config, stream_class", [
    (BYTES, io.StringIO),
    (STR, io.StringIO),
    (BYTES, CollectingDevnull),
], ids=["bytes", "str", "devnull-subclass"])
def test_debugstream(monkeypatch, config, stream_class):
    stream = stream_class()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", stream)
    with session(**config.kwargs) as (srv, client):
        greet(client, "EHLO", config)
        assert client.cmd("MAIL") == wire(SYNTAX_EXT)
        assert client.cmd("MAIL FROM:<a@example.org> SIZE=10") == wire(OK)
        assert client.cmd("RCPT TO:<b@example.org>") == wire(OK)
        assert send_data(client, b"Hi\r\n..x\r\n.\r\n") == wire(OK)
        assert client.cmd("QUIT") == wire("221 Bye")
        peer = client.address
    r = repr if config.decode_data else (lambda s: repr(s.encode()))
    lines = stream.getvalue().split("\n")
    assert re.fullmatch(r"RecordingServer started at \w{3} \w{3} [ \d]\d "
                        r"\d\d:\d\d:\d\d \d{4}", lines[0])
    assert lines[1:] == [
        "\tLocal addr: ('127.0.0.1', 0)",
        "\tRemote addr:('127.0.0.1', 9)",
        f"Incoming connection from {peer!r}",
        f"Peer: {peer!r}",
        "Data: " + r("EHLO client.example"),
        "Data: " + r("MAIL"),
        "===> MAIL None",
        "Data: " + r("MAIL FROM:<a@example.org> SIZE=10"),
        "===> MAIL FROM:<a@example.org> SIZE=10",
        "sender: a@example.org",
        "Data: " + r("RCPT TO:<b@example.org>"),
        "===> RCPT TO:<b@example.org>",
        "recips: ['b@example.org']",
        "Data: " + r("DATA"),
        "Data: " + r("Hi\r\n..x"),
        "Data: " + r("QUIT"),
        "",
    ]


# ---------------------------------------------------------------------------
# The command line

# The module docstring, which is also the usage text (an interface fact).
USAGE_TEMPLATE = """\
An RFC 5321 smtp proxy with optional RFC 1870 and RFC 6531 extensions.

Usage: %(program)s [options] [localhost:localport [remotehost:remoteport]]

Options:

    --nosetuid
    -n
        This program generally tries to setuid `nobody', unless this flag is
        set.  The setuid call will fail if this program is not run as root (in
        which case, use this flag).

    --version
    -V
        Print the version number and exit.

    --class classname
    -c classname
        Use `classname' as the concrete SMTP proxy class.  Uses `PureProxy' by
        default.

    --size limit
    -s limit
        Restrict the total size of the incoming message to "limit" number of
        bytes via the RFC 1870 SIZE extension.  Defaults to 33554432 bytes.

    --smtputf8
    -u
        Enable the SMTPUTF8 extension and behave as an RFC 6531 smtp proxy.

    --debug
    -d
        Turn on debugging prints.

    --help
    -h
        Print this message and exit.

Version: %(__version__)s

If localhost is not given then `localhost' is used, and if localport is not
given then 8025 is used.  If remotehost is not given then `localhost' is used,
and if remoteport is not given, then 25 is used.
"""

# `python -m smtpd` runs the file as found on PYTHONPATH; argv[0] is its path.
PROGRAM = os.path.join(MODULE_DIR, "smtpd.py")
USAGE = USAGE_TEMPLATE % {"program": PROGRAM, "__version__": VERSION} + "\n"


def cli_env():
    """The environment that makes a subprocess import the smtpd under test."""
    return dict(os.environ, PYTHONPATH=MODULE_DIR)


def cli_command(*args):
    # 3.11 prints its own deprecation warnings on stderr; ours prints none.
    flags = ["-W", "ignore::DeprecationWarning"] if ORACLE else []
    return [sys.executable, *flags, "-m", "smtpd", *args]


@pytest.fixture
def run_cli(tmp_path):
    def run(*args):
        return subprocess.run(cli_command(*args), cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=30)
    return run


@pytest.mark.parametrize("option", ["-h", "--help", "--he", "-h -V"])
def test_cli_help(run_cli, option):
    result = run_cli(*option.split())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", USAGE)


@pytest.mark.parametrize("option", ["-V", "--version", "--vers", "-V -h"])
def test_cli_version(run_cli, option):
    result = run_cli(*option.split())
    assert (result.returncode, result.stdout, result.stderr) == (
        0, VERSION + "\n", "")


def getopt_error(args):
    """What this Python's getopt says about `args` given smtpd's options."""
    try:
        getopt.getopt(args, "nVhc:s:du", ["class=", "nosetuid", "version", "help",
                                          "size=", "debug", "smtputf8"])
    except getopt.GetoptError as error:
        return str(error)
    raise AssertionError(f"getopt accepts {args}")


@pytest.mark.parametrize("args", [
    "-x", "-X", "--bogus", "-c", "--size", "--nosetuid=yes", "--s=1", "-n -x -h"])
def test_cli_bad_option(run_cli, args):
    # The message is getopt's, so it is whatever this Python's getopt says
    # ("option -x not recognized"; 3.14 added hints to some).
    result = run_cli(*args.split())
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", USAGE + getopt_error(args.split()) + "\n")


@pytest.mark.parametrize("args, message", [
    ("localhost", "Bad local spec: localhost"),
    ("localhost:smtp", "Bad local port: localhost:smtp"),
    ("localhost:", "Bad local port: localhost:"),
    ("localhost remote", "Bad local spec: localhost"),
    ("127.0.0.1:8025 remote", "Bad remote spec: remote"),
    ("127.0.0.1:8025 remote:x", "Bad remote port: remote:x"),
    ("a:1 b:2 c:3", "Invalid arguments: a:1, b:2, c:3"),
    ("-n a b c d", "Invalid arguments: a, b, c, d"),
])
def test_cli_usage_errors(run_cli, args, message):
    result = run_cli(*args.split())
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", USAGE + message + "\n")


@pytest.mark.parametrize("args, size", [
    ("-s abc", "abc"),
    ("--size=1k", "1k"),
    ("-s abc -h", "abc"),
    ("-s", ""),
])
def test_cli_invalid_size(run_cli, args, size):
    result = run_cli(*args.split(), *([""] if args == "-s" else []))
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"Invalid size: {size}\n")


@pytest.mark.parametrize("classname, error", [
    ("NoSuchServer", "AttributeError: module '__main__' has no attribute 'NoSuchServer'"),
    ("no_such_module.Server", "ModuleNotFoundError: No module named 'no_such_module'"),
    (".Server", "ValueError: Empty module name"),
    ("os.path.NoSuch", "AttributeError: module 'posixpath' has no attribute 'NoSuch'"),
    ("..Server", "ModuleNotFoundError: No module named '.'"),
])
def test_cli_unknown_class(run_cli, classname, error):
    # 3.11 lets the exception out: a traceback and exit status 1.
    result = run_cli("-n", "-c", classname, "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert result.stderr.endswith("\n" + error + "\n")


def free_port():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


# CliServer stops the CLI as a user does, with Ctrl-C.  Under a parent that
# ignores SIGINT (a background job) the CLI would start with it ignored; a
# handled signal is reset to the default by exec, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class CliServer:
    """`python -m smtpd OPTIONS 127.0.0.1:PORT` as a subprocess."""

    def __init__(self, cwd, *options):
        self.address = ("127.0.0.1", free_port())
        self.proc = subprocess.Popen(
            cli_command(*options, "%s:%d" % self.address), cwd=cwd,
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def __enter__(self):
        try:
            self._wait_until_listening()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_listening(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("server exited: %r" % (self.proc.communicate(),))
            try:
                with socket.create_connection(self.address, timeout=1) as probe:
                    probe.recv(1024)        # the greeting
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self):
        """Interrupt the server as Ctrl-C would: (returncode, stdout, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, out, err

    def __exit__(self, *exc_info):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


CLI_MESSAGE = b"Subject: cli\r\n\r\nhello\r\n"
CLI_PRINTED = (
    BANNER
    + "mail options: ['SIZE=%d']\n" % len(CLI_MESSAGE)
    + "b'Subject: cli'\nb'X-Peer: 127.0.0.1'\nb''\nb'hello'\n"
    + END_BANNER)


def send_cli_message(address):
    with smtplib.SMTP(*address, timeout=CLIENT_TIMEOUT) as smtp:
        assert smtp.sendmail("a@example.org", ["b@example.org"], CLI_MESSAGE) == {}


@pytest.mark.parametrize("classname", ["DebuggingServer", "smtpd.DebuggingServer"])
def test_cli_debugging_server(tmp_path, classname):
    with CliServer(tmp_path, "-n", "-c", classname, "-s", "1000") as server:
        send_cli_message(server.address)
        assert server.stop() == (0, CLI_PRINTED, "")


@pytest.mark.parametrize("options", [["-s", "1000", "-u"],
                                     ["--size=1000", "--smtputf8"]])
def test_cli_size_and_smtputf8(tmp_path, options):
    with CliServer(tmp_path, "--nosetuid", "--class=DebuggingServer",
                   *options) as server:
        client = LineClient(server.address)
        try:
            assert client.greeting == wire(f"220 {FQDN} {VERSION}")
            assert client.cmd("EHLO client.example") == wire(
                f"250-{FQDN}", "250-SIZE 1000", "250-8BITMIME", "250-SMTPUTF8",
                "250 HELP")
            assert client.cmd("QUIT") == wire("221 Bye")
        finally:
            client.close()
        assert server.stop() == (0, "", "")


def test_cli_offers_no_size_without_s(tmp_path):
    """As in 3.11, the CLI passes no size limit unless -s gives one."""
    with CliServer(tmp_path, "-n", "-c", "DebuggingServer") as server:
        client = LineClient(server.address)
        try:
            assert client.cmd("EHLO client.example") == wire(
                f"250-{FQDN}", "250-8BITMIME", "250 HELP")
            assert client.cmd("MAIL FROM:<a@example.org> SIZE=33554433") == (
                wire("250 OK"))
        finally:
            client.close()
        assert server.stop() == (0, "", "")


def test_cli_size_option_limits_messages(tmp_path):
    with CliServer(tmp_path, "-n", "-c", "DebuggingServer", "-s", "1000") as server:
        client = LineClient(server.address)
        try:
            assert client.cmd("EHLO client.example") == wire(
                f"250-{FQDN}", "250-SIZE 1000", "250-8BITMIME", "250 HELP")
            assert client.cmd("MAIL FROM:<a@example.org> SIZE=1001") == wire(
                "552 Error: message size exceeds fixed maximum message size")
            assert client.cmd("MAIL FROM:<a@example.org>") == wire("250 OK")
            assert client.cmd("RCPT TO:<b@example.org>") == wire("250 OK")
            assert client.cmd("DATA") == wire(
                "354 End data with <CR><LF>.<CR><LF>")
            assert client.cmd("x" * 1001 + "\r\n.") == wire(
                "552 Error: Too much mail data")
        finally:
            client.close()
        assert server.stop() == (0, "", "")


def test_cli_debug_option(tmp_path):
    with CliServer(tmp_path, "-n", "-d", "-c", "DebuggingServer", "-s", "1000") as server:
        send_cli_message(server.address)
        returncode, out, err = server.stop()
    assert (returncode, out) == (0, CLI_PRINTED)
    assert ("\n\tLocal addr: %r\n\tRemote addr:('localhost', 25)\n" % (server.address,)
            in err)
    assert "DebuggingServer started at " in err
    assert "\nsender: a@example.org\n" in err
    assert "\nrecips: ['b@example.org']\n" in err


def test_cli_setuid_nobody(tmp_path):
    if os.geteuid() != 0:
        result = subprocess.run(
            cli_command("-c", "DebuggingServer", "127.0.0.1:%d" % free_port()),
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=30)
        assert (result.returncode, result.stderr) == (
            1, 'Cannot setuid "nobody"; try running with -n option.\n')
        return
    pwd = pytest.importorskip("pwd")
    nobody = pwd.getpwnam("nobody").pw_uid
    with CliServer(tmp_path, "-c", "DebuggingServer", "-s", "1000") as server:
        status = f"/proc/{server.proc.pid}/status"
        if os.path.exists(status):
            with open(status) as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
            assert uid_line.split()[1:] == [str(nobody)] * 4
        send_cli_message(server.address)
        assert server.stop() == (0, CLI_PRINTED, "")


def test_cli_not_allowed_to_setuid_says_use_n(tmp_path):
    command = cli_command("-c", "DebuggingServer", "127.0.0.1:%d" % free_port())
    if os.geteuid() == 0:
        # Root without the capability to change its user id, as in a
        # container that drops CAP_SETUID.
        setpriv = shutil.which("setpriv")
        drop = [setpriv, "--bounding-set=-setuid", "--inh-caps=-setuid"]
        if setpriv is None or subprocess.run(drop + ["true"]).returncode != 0:
            pytest.skip("setpriv cannot drop CAP_SETUID here")
        command = drop + command
    else:
        pwd = pytest.importorskip("pwd")
        if os.geteuid() == pwd.getpwnam("nobody").pw_uid:
            pytest.skip("running as nobody: setuid(nobody) succeeds")
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", 'Cannot setuid "nobody"; try running with -n option.\n')


# python -m smtpd ARGS, on a platform without the pwd module.
RUN_WITHOUT_PWD = """\
import runpy, sys
sys.modules['pwd'] = None
sys.argv[1:] = %r
runpy.run_module('smtpd', run_name='__main__', alter_sys=True)
"""


def test_cli_without_pwd_module_says_use_n(tmp_path):
    code = RUN_WITHOUT_PWD % (["-c", "DebuggingServer", "127.0.0.1:%d" % free_port()],)
    flags = ["-W", "ignore::DeprecationWarning"] if ORACLE else []
    result = subprocess.run([sys.executable, *flags, "-c", code], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", 'Cannot import module "pwd"; try running with -n option.\n')


# ---------------------------------------------------------------------------
# Module surface

PUBLIC_NAMES_311 = [
    "COMMASPACE", "DATA_SIZE_DEFAULT", "DEBUGSTREAM", "DebuggingServer",
    "Devnull", "NEWLINE", "Options", "PureProxy", "SMTPChannel", "SMTPServer",
    "asynchat", "asyncore", "collections", "errno", "get_addr_spec",
    "get_angle_addr", "getopt", "os", "parseargs", "program", "socket", "sys",
    "time", "usage", "warn",
]

SERVER_SIGNATURE = ("(localaddr, remoteaddr, data_size_limit=33554432, map=None, "
                    "enable_SMTPUTF8=False, decode_data=False)")
COMMAND_SIGNATURE = "(self, arg)"
SIGNATURES_311 = {
    "DebuggingServer": SERVER_SIGNATURE,
    "DebuggingServer.process_message": "(self, peer, mailfrom, rcpttos, data, **kwargs)",
    "Devnull": "()",
    "Devnull.write": "(self, msg)",
    "Devnull.flush": "(self)",
    "Options": "()",
    "PureProxy": "(*args, **kwargs)",
    "PureProxy.process_message": "(self, peer, mailfrom, rcpttos, data)",
    "SMTPChannel": ("(server, conn, addr, data_size_limit=33554432, map=None, "
                    "enable_SMTPUTF8=False, decode_data=False)"),
    "SMTPChannel.push": "(self, msg)",
    "SMTPChannel.collect_incoming_data": "(self, data)",
    "SMTPChannel.found_terminator": "(self)",
    **{f"SMTPChannel.smtp_{command}": COMMAND_SIGNATURE for command in [
        "HELO", "EHLO", "NOOP", "QUIT", "HELP", "VRFY", "MAIL", "RCPT",
        "RSET", "DATA", "EXPN"]},
    "SMTPServer": SERVER_SIGNATURE,
    "SMTPServer.handle_accepted": "(self, conn, addr)",
    "SMTPServer.process_message": "(self, peer, mailfrom, rcpttos, data, **kwargs)",
    "parseargs": "()",
    "usage": "(code, msg='')",
}

# Signatures that differ on purpose (see the deviations table).
SIGNATURE_DEVIATIONS = {"PureProxy.process_message": "proxy-bytes"}

# Prints, as JSON, what the tables above say about the smtpd it imports.
SURFACE_PROBE = r"""
import inspect, json, smtpd
names = sorted(n for n in dir(smtpd) if not n.startswith("_"))
signatures = {}
for name in names:
    obj = getattr(smtpd, name)
    if not callable(obj) or getattr(obj, "__module__", None) != "smtpd":
        continue
    signatures[name] = str(inspect.signature(obj))
    if isinstance(obj, type):
        for attr, value in vars(obj).items():
            if not attr.startswith("_") and inspect.isfunction(value):
                signatures[name + "." + attr] = str(inspect.signature(value))
print(json.dumps({"file": smtpd.__file__, "names": names,
                  "signatures": signatures, "doc": smtpd.__doc__}))
"""


def test_all_and_version():
    assert smtpd.__all__ == ["SMTPChannel", "SMTPServer", "DebuggingServer",
                             "PureProxy"]
    assert smtpd.__version__ == VERSION


def test_constants():
    assert smtpd.DATA_SIZE_DEFAULT == 33554432
    assert smtpd.NEWLINE == "\n"
    assert smtpd.COMMASPACE == ", "
    assert smtpd.program == sys.argv[0]
    assert isinstance(smtpd.DEBUGSTREAM, smtpd.Devnull)
    assert smtpd.Devnull().write("ignored") is None
    assert smtpd.Devnull().flush() is None


def test_public_names():
    public = sorted(name for name in dir(smtpd) if not name.startswith("_"))
    assert public == PUBLIC_NAMES_311
    # Tests and subclasses replace these (smtpd.socket above all).
    for module in [sys, os, socket, time, collections, asyncore]:
        assert getattr(smtpd, module.__name__) is module
    assert smtpd.warn is warnings.warn


def test_signatures():
    for dotted, expected in SIGNATURES_311.items():
        if dotted in SIGNATURE_DEVIATIONS and not ORACLE:
            continue
        obj = smtpd
        for part in dotted.split("."):
            obj = getattr(obj, part)
        assert (dotted, str(inspect.signature(obj))) == (dotted, expected)


def test_docstring():
    assert smtpd.__doc__ == USAGE_TEMPLATE


@pytest.mark.skipif(shutil.which("python3.11") is None,
                    reason="needs python3.11 with its own smtpd")
def test_tables_match_the_oracle(tmp_path):
    """The hard-coded 3.11 facts above are what 3.11 itself says."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        ["python3.11", "-W", "ignore", "-c", SURFACE_PROBE], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    surface = json.loads(result.stdout)
    assert surface["file"].endswith(os.path.join("python3.11", "smtpd.py"))
    assert surface["names"] == PUBLIC_NAMES_311
    assert surface["signatures"] == SIGNATURES_311
    assert surface["doc"] == USAGE_TEMPLATE


@deviation("cli-poll")
def test_cli_loops_with_poll_and_a_one_second_timeout(monkeypatch):
    # poll() for descriptors past 1024 (row cli-poll); the 1 s timeout is
    # what the accept-emfile row promises for accepting again.
    calls = []
    real_loop = asyncore.loop
    main_thread = threading.current_thread()

    def loop(**kwargs):
        # A module-scoped server fixture may be looping in its own thread
        # meanwhile; its calls are not the CLI's.
        if threading.current_thread() is not main_thread:
            return real_loop(**kwargs)
        servers = [obj for obj in asyncore.socket_map.values()
                   if isinstance(obj, smtpd.DebuggingServer)]
        calls.append((kwargs, servers))

    monkeypatch.setattr(smtpd.asyncore, "loop", loop)
    monkeypatch.setattr(sys, "argv", ["smtpd", "-n", "-c", "smtpd.DebuggingServer",
                                      "127.0.0.1:0"])
    smtpd._main()
    [(kwargs, servers)] = calls
    for server in servers:
        server.close()
    assert kwargs == {"timeout": 1.0, "use_poll": True}
    assert len(servers) == 1


def test_options_defaults():
    options = smtpd.Options()
    assert options.setuid is True
    assert options.classname == "PureProxy"
    assert options.enable_SMTPUTF8 is False


def test_options_default_size():
    # The usage text says 33554432; 3.11 and pysmtpd both use no limit.
    assert smtpd.Options.size_limit is None
    assert smtpd.Options().size_limit is None


@pytest.mark.parametrize("argv, expected", [
    ([], dict(setuid=True, classname="PureProxy", enable_SMTPUTF8=False,
              localhost="localhost", localport=8025,
              remotehost="localhost", remoteport=25)),
    (["-n", "-c", "DebuggingServer", "-s", "100", "-u", "h:1", "r:2"],
     dict(setuid=False, classname="DebuggingServer", enable_SMTPUTF8=True,
          size_limit=100, localhost="h", localport=1, remotehost="r",
          remoteport=2)),
    (["--size= 7", ":0"], dict(size_limit=7, localhost="", localport=0,
                               remotehost="localhost", remoteport=25)),
])
def test_parseargs(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "argv", ["smtpd"] + argv)
    options = smtpd.parseargs()
    assert {name: getattr(options, name) for name in expected} == expected


def test_parseargs_debug_sets_debugstream(monkeypatch):
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", smtpd.DEBUGSTREAM)
    monkeypatch.setattr(sys, "argv", ["smtpd", "-d"])
    smtpd.parseargs()
    assert smtpd.DEBUGSTREAM is sys.stderr


@pytest.mark.parametrize("code, msg, tail", [(0, "", ""), (3, "why", "why\n")])
def test_usage(monkeypatch, capsys, code, msg, tail):
    monkeypatch.setattr(smtpd, "program", "smtpd-test")
    with pytest.raises(SystemExit) as info:
        smtpd.usage(code, msg)
    assert info.value.code == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == USAGE_TEMPLATE % {
        "program": "smtpd-test", "__version__": VERSION} + "\n" + tail


@deviation("import-warning")
@pytest.mark.parametrize("args, stdout", [
    (["-c", "import smtpd"], ""),
    (["-m", "smtpd", "--version"], VERSION + "\n"),
])
def test_import_is_silent_under_warnings_as_errors(tmp_path, args, stdout):
    result = subprocess.run([sys.executable, "-W", "error", *args], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, stdout, "")
