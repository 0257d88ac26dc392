"""The paths through smtpd.py that the other suites don't reach.

The coverage gate (tox -e coverage) wants every line and branch of smtpd.py
taken.  test_smtpd.py, the rest of tests/ and CPython 3.11's test_smtpd.py
take all but the ones here: a connection on which Nagle's algorithm can't be
turned off, a client gone before the server asked for its address, another
error from getpeername() or accept(), the rest of a message already known
not to be UTF-8, an upstream that hangs up on PureProxy's QUIT, class-level
access to the pre-3.3 attribute names, and the CLI that can't become nobody.

Each test takes one of them with a real server on 127.0.0.1 and a real
client, or the CLI in a subprocess, and checks what the client, the server's
log or the CLI's user sees.  Where the fault can't be made for real (a socket
that refuses TCP_NODELAY, getpeername() failing with EINVAL), a wrapper
around the accepted socket fails that one call.

Not here: the CLI that does become nobody (test_smtpd.py's
test_cli_setuid_nobody, as root), and the branch nothing can take,
_getaddr()'s empty token (a pragma in smtpd.py says why).
"""

import errno
import inspect
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import warnings

import pytest

import smtpd

# test_smtpd.py (one directory up) and test_proxy.py have the servers and
# clients used here.  Appended, so that they can't shadow smtpd.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (_HERE, os.path.dirname(_HERE)):
    if _path not in sys.path:
        sys.path.append(_path)

import test_proxy  # noqa: E402

import test_smtpd as unit  # noqa: E402

wire = unit.wire
GREETING = wire(f"220 {unit.FQDN} {unit.VERSION}")
GO_AHEAD = wire("354 End data with <CR><LF>.<CR><LF>")
OK = wire("250 OK")
MESSAGE = b"Subject: branches\r\n\r\nHello.\r\n"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="relies on how Linux reports a reset socket")


# -- an accepted socket behind a wrapper ----------------------------------------

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


class WrappingServer(unit.RecordingServer):
    """Gives each channel its accepted socket inside conn_class."""

    def __init__(self, *args, conn_class, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn_class = conn_class
        self.conns = []

    def handle_accepted(self, conn, addr):
        # Not RecordingServer's: it calls setsockopt() itself.
        self.conns.append(self.conn_class(conn))
        smtpd.SMTPServer.handle_accepted(self, self.conns[-1], addr)


# -- sockets ------------------------------------------------------------------

@pytest.mark.parametrize("conn_class", [NoDelayRefused, NotASocket],
                         ids=["setsockopt-fails", "not-a-socket"])
def test_session_works_where_nagle_cannot_be_turned_off(conn_class):
    with unit.session(WrappingServer, conn_class=conn_class) as (running, client):
        replies = [client.greeting, client.cmd("EHLO client.example")]
        assert replies == [GREETING, unit.EHLO_REPLY["bytes"]]
        for line in ("MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>"):
            replies.append(client.cmd(line))
        replies.append(client.cmd("DATA"))
        client.send(MESSAGE + b".\r\n")
        replies += [client.reply(), client.cmd("QUIT")]
        assert replies[2:] == [OK, OK, GO_AHEAD, OK, wire("221 Bye")]
        assert client.at_eof()
        [conn] = running.server.conns
    assert [m.data for m in running.server.messages] == [b"Subject: branches\n\nHello."]
    # Each line of a reply goes out in a send of its own, as in 3.11: only
    # with Nagle off are the lines of a reply joined into one send.
    assert conn.sends == b"".join(replies).splitlines(keepends=True)


class HeldServer(unit.RecordingServer):
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


@linux_only
def test_client_gone_before_its_greeting_does_not_stop_the_server(monkeypatch):
    debug = io.StringIO()
    monkeypatch.setattr(smtpd, "DEBUGSTREAM", debug)
    with unit.ServerThread(HeldServer) as running:
        # A client connects and resets the connection while it waits to be
        # accepted: accept() then gives a socket that has no peer any more,
        # and getpeername() fails with ENOTCONN.
        gone = socket.create_connection(running.address, timeout=unit.CLIENT_TIMEOUT)
        gone_addr = gone.getsockname()
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        unit.wait_for(lambda: not _established(running.address[1], gone_addr[1]))
        running.server.released = True
        unit.wait_for(lambda: f"Incoming connection from {gone_addr!r}" in debug.getvalue())
        # The next client is served; the first left nothing open behind it.
        client = unit.LineClient(running.address)
        try:
            assert client.greeting == GREETING
            assert sorted(type(obj).__name__ for obj in running.map.values()) == [
                "HeldServer", "SMTPChannel"]
            assert client.cmd("HELO client.example") == wire(f"250 {unit.FQDN}")
            unit.send_envelope(client)
            assert unit.send_data(client, MESSAGE + b".\r\n") == OK
        finally:
            client.close()
    log = debug.getvalue()
    assert f"Peer: {gone_addr!r}" not in log
    assert f"Peer: {client.address!r}" in log
    assert len(running.server.messages) == 1


def test_other_getpeername_error_goes_to_handle_error(capsys):
    with unit.ServerThread(WrappingServer, conn_class=PeerUnknown) as running:
        with socket.create_connection(running.address,
                                      timeout=unit.CLIENT_TIMEOUT) as client:
            # No greeting: the channel was closed.
            assert client.recv(1024) == b""
        # As in 3.11, asyncore's handle_error logs the exception, and the
        # listening server closes.
        unit.wait_for(lambda: not running.map)
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel ")
    assert "(<class 'OSError'>:[Errno %d] %s " % (
        errno.EINVAL, os.strerror(errno.EINVAL)) in out
    [conn] = running.server.conns
    assert conn.fileno() == -1


@linux_only
def test_accept_error_not_about_resources_goes_to_handle_error(capsys):
    with unit.ServerThread() as running:
        # On Linux, accept() on a listening socket that was shut down fails
        # with EINVAL: not a lack of descriptors, so it is not waited out.
        running.server.socket.shutdown(socket.SHUT_RDWR)
        unit.wait_for(lambda: not running.map)
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel ")
    assert "(<class 'OSError'>:[Errno %d] %s " % (
        errno.EINVAL, os.strerror(errno.EINVAL)) in out


# -- message data -------------------------------------------------------------

@unit.deviation("split-utf8")
def test_message_not_utf8_is_refused_and_its_rest_not_kept():
    with unit.session(decode_data=True) as (running, client):
        channel = running.channel(client)
        assert client.cmd("HELO client.example") == wire(f"250 {unit.FQDN}")
        unit.send_envelope(client)
        assert client.cmd("DATA") == GO_AHEAD
        # Two reads: an invalid UTF-8 sequence in the first, more text of the
        # same message in the second.
        first, second = b"Subject: caf\xe9 au lait", b"\r\n\r\nand more text"
        client.send(first)
        unit.wait_for(lambda: channel.num_bytes == len(first))
        client.send(second)
        unit.wait_for(lambda: channel.num_bytes == len(first) + len(second))
        # The message is known to be refused: none of it is kept meanwhile.
        assert channel.received_lines == []
        client.send(b"\r\n.\r\n")
        assert client.reply() == wire("554 Error: message data is not valid UTF-8")
        assert client.cmd("NOOP") == OK
    assert running.server.messages == []


# -- PureProxy ----------------------------------------------------------------

class HangUpOnQuit(smtpd.SMTPChannel):
    """An upstream's channel that closes on QUIT instead of replying 221."""

    def smtp_QUIT(self, arg):
        self.close()


class QuitlessUpstream(unit.RecordingServer):
    channel_class = HangUpOnQuit


@unit.deviation("proxy-bytes")
def test_proxy_says_250_when_upstream_hangs_up_on_quit():
    with unit.ServerThread(QuitlessUpstream) as upstream:
        proxy = test_proxy.RunningProxy(upstream.address)
        try:
            with proxy.client() as client:
                # Delivered before the upstream hung up: no refusal.
                assert client.sendmail("a@example.org", ["b@example.org"], MESSAGE) == {}
                assert client.noop() == (250, b"OK")
        finally:
            proxy.stop()
    [message] = upstream.server.messages
    assert (message.mailfrom, message.rcpttos) == ("a@example.org", ["b@example.org"])
    assert message.data == b"Subject: branches\nX-Peer: 127.0.0.1\n\nHello."


# -- the pre-3.3 attribute names ------------------------------------------------

def test_introspecting_smtpchannel_gives_no_deprecation_warning():
    names = ["_SMTPChannel" + alias for alias, _ in unit.ALIASES]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = dict(inspect.getmembers(smtpd.SMTPChannel))
        aliases = [getattr(smtpd.SMTPChannel, name) for name in names]
    # On the class, each old name is its descriptor (what help() and
    # inspect list), not a warning and an AttributeError.
    assert all(inspect.isdatadescriptor(alias) for alias in aliases)
    assert [members[name] for name in names] == aliases


# -- the CLI without -n, when it can't become nobody ----------------------------

def _cli_serving_on_a_free_port():
    return ["-c", "DebuggingServer", "127.0.0.1:%d" % unit.free_port()]


def test_cli_not_allowed_to_setuid_says_use_n(tmp_path):
    command = unit.cli_command(*_cli_serving_on_a_free_port())
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
    result = subprocess.run(command, cwd=tmp_path, env=unit.cli_env(),
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
    code = RUN_WITHOUT_PWD % (_cli_serving_on_a_free_port(),)
    flags = ["-W", "ignore::DeprecationWarning"] if unit.ORACLE else []
    result = subprocess.run([sys.executable, *flags, "-c", code], cwd=tmp_path,
                            env=unit.cli_env(), capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", 'Cannot import module "pwd"; try running with -n option.\n')
