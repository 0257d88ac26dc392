"""The load generator: raw-socket SMTP clients for each workload.

measure.Client runs this file as its own process, so the client's cost stays
low, constant and out of the server's measurement.  It reads one JSON request
a line on stdin ({"op": "W1", "port": ..., ...}) and writes one JSON answer a
line on stdout ({"ok": true, "result": {...}} or {"ok": false, "error": ...}).

Workloads:

    W1   4 connections x 1000 messages of ~2 KB, a new envelope per message
    W2   one 32 MiB message of 78-character lines, some dot-stuffed
         (a fresh server process per round, for a clean peak RSS)
    W3   2000 sequential connections: banner, EHLO, QUIT (the client sends
         quick ACKs, see client_w3)
    LAT  EHLO -> complete reply as a plain client sees it (Nagle on, no
         quick ACKs): 200 connections, the first EHLO of each timed
    W4   1500 idle connections to `python -m smtpd -n -c benchsink.Sink` (the
         CLI), then one message on a new connection

The counts are a full run's; bench.py passes them (--quick passes smaller
ones).
"""

import json
import select
import selectors
import socket
import sys
import time

from servers import raise_nofile

REPLY_TIMEOUT = 30.0          # seconds to wait for any single SMTP reply

_TCP_QUICKACK = getattr(socket, 'TCP_QUICKACK', None)

_FILLER = (b'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed '
           b'do eiusmod tem\r\n')          # 78 bytes with its CRLF


class BenchError(Exception):
    """A server misbehaved or a step did not finish in time."""


def _reply_done(buf):
    """True when buf holds one complete (possibly multi-line) SMTP reply."""
    if not buf.endswith(b'\r\n'):
        return False
    i = buf.rfind(b'\r\n', 0, len(buf) - 2)
    start = 0 if i < 0 else i + 2
    return buf[start + 3:start + 4] in (b' ', b'\r')


def _read_reply(sock, quickack=False):
    buf = b''
    while True:
        if quickack:
            # Not sticky: the kernel may fall back to delayed ACKs any time.
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError('server closed the connection; got %r' % buf[:80])
        buf += chunk
        if _reply_done(buf):
            return buf


def _expect(reply, code):
    if not reply.startswith(code):
        raise BenchError('expected %s, got %r' % (code.decode(), reply[:120]))


def _connect(port, timeout=REPLY_TIMEOUT):
    return socket.create_connection(('127.0.0.1', port), timeout=timeout)


def _w1_message(conn, i, body):
    head = ('From: <sender%d.%d@example.org>\r\nTo: <rcpt%d.%d@example.net>\r\n'
            'Subject: benchmark message %d of connection %d\r\n'
            'Message-ID: <%d.%d@bench.example>\r\n\r\n'
            % (conn, i, conn, i, i, conn, conn, i)).encode()
    return head + body + b'.\r\n'


def _w1_steps(conn, msgs, body):
    """(bytes to send, expected reply code) for one W1 connection."""
    yield None, b'220'
    yield b'EHLO bench.example\r\n', b'250'
    for i in range(msgs):
        yield b'MAIL FROM:<sender%d.%d@example.org>\r\n' % (conn, i), b'250'
        yield b'RCPT TO:<rcpt%d.%d@example.net>\r\n' % (conn, i), b'250'
        yield b'DATA\r\n', b'354'
        yield _w1_message(conn, i, body), b'250'
    yield b'QUIT\r\n', b'221'


def client_w1(port, conns, msgs, size):
    """W1: `conns` connections at once, each sending `msgs` messages."""
    body = _FILLER * max(1, (size - 200) // len(_FILLER))
    live = {}
    started = time.perf_counter()

    def advance(sock, state):
        try:
            payload, state[1] = next(state[0])
        except StopIteration:
            del live[sock]
            sock.close()
            return
        if payload:
            sock.sendall(payload)

    for c in range(conns):
        sock = _connect(port)
        live[sock] = [_w1_steps(c, msgs, body), None, b'']
        advance(sock, live[sock])
    while live:
        ready, _, _ = select.select(list(live), [], [], REPLY_TIMEOUT)
        if not ready:
            raise BenchError('W1: no reply within %ss' % REPLY_TIMEOUT)
        for sock in ready:
            state = live[sock]
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError('W1: server closed the connection')
            state[2] += chunk
            if _reply_done(state[2]):
                _expect(state[2], state[1])
                state[2] = b''
                advance(sock, state)
    return {'messages': conns * msgs, 'wall': time.perf_counter() - started}


_W2_CACHE = {}


def _w2_wire(size):
    """(wire bytes of the DATA payload, message size once un-stuffed)."""
    if size not in _W2_CACHE:
        plain = b'%s\r\n' % (b'x' * 78)
        dotted = b'.%s\r\n' % (b'y' * 77)     # 78 characters, sent as '..'
        block = plain * 9 + b'.' + dotted     # 10 lines, one dot-stuffed
        nlines = size // len(plain)
        wire = block * (nlines // 10) + plain * (nlines % 10) + b'.\r\n'
        _W2_CACHE.clear()
        _W2_CACHE[size] = wire, nlines * len(plain)
    return _W2_CACHE[size]


def client_prepare(size):
    """Build W2's payload ahead of time, outside any measurement."""
    return {'wire_size': len(_w2_wire(size)[0])}


def client_w2(port, size):
    """W2: one message of about `size` bytes on one connection."""
    wire, msg_size = _w2_wire(size)
    sock = _connect(port)
    try:
        _expect(_read_reply(sock), b'220')
        for line, code in ((b'EHLO bench.example\r\n', b'250'),
                           (b'MAIL FROM:<big@example.org>\r\n', b'250'),
                           (b'RCPT TO:<big@example.net>\r\n', b'250'),
                           (b'DATA\r\n', b'354')):
            sock.sendall(line)
            _expect(_read_reply(sock), code)
        started = time.perf_counter()
        sock.settimeout(300.0)              # total for sendall, then the reply
        sock.sendall(wire)
        _expect(_read_reply(sock), b'250')
        wall = time.perf_counter() - started
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(b'QUIT\r\n')
        _expect(_read_reply(sock), b'221')
    finally:
        sock.close()
    return {'message_size': msg_size, 'wire_size': len(wire), 'wall': wall}


def client_w3(port, conns, quickack=True):
    """W3: `conns` sequential sessions of banner, EHLO and QUIT."""
    # 3.11 writes its EHLO reply line by line: with Nagle on its side and
    # delayed ACKs on ours each session would stall ~40 ms (LAT shows that).
    # Quick ACKs keep the run short; the server's CPU is the same.
    quickack = quickack and _TCP_QUICKACK is not None
    started = time.perf_counter()
    for _ in range(conns):
        sock = _connect(port)
        try:
            _expect(_read_reply(sock, quickack), b'220')
            sock.sendall(b'EHLO bench.example\r\n')
            _expect(_read_reply(sock, quickack), b'250')
            sock.sendall(b'QUIT\r\n')
            _expect(_read_reply(sock, quickack), b'221')
        finally:
            sock.close()
    return {'connections': conns, 'wall': time.perf_counter() - started}


def client_lat(port, n):
    """Time EHLO -> complete reply, once per connection: a second EHLO in a
    session gets only `503 Duplicate HELO/EHLO`."""
    samples = []
    for _ in range(n):
        # An ordinary socket, as smtplib's: Nagle on, no TCP_QUICKACK.
        sock = _connect(port)
        try:
            _expect(_read_reply(sock), b'220')
            started = time.perf_counter()
            sock.sendall(b'EHLO bench.example\r\n')
            reply = _read_reply(sock)
            samples.append((time.perf_counter() - started) * 1000.0)
            _expect(reply, b'250')
            sock.sendall(b'QUIT\r\n')
            _expect(_read_reply(sock), b'221')
        finally:
            sock.close()
    return {'samples_ms': samples}


def client_w4(port, conns, deadline, window=64):
    """Hold `conns` idle connections (each got its banner), then send a message.

    At most `window` connections are in flight (connecting or awaiting the
    banner) at once, so a small listen backlog is not simply flooded.
    """
    limit = raise_nofile(conns + 256)
    sel = selectors.DefaultSelector()
    served, failed, idle = 0, 0, []
    pending, opened = {}, 0
    started = time.monotonic()
    end = started + deadline
    try:
        while served + failed < conns and time.monotonic() < end:
            while opened < conns and len(pending) < window:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                opened += 1
                err = sock.connect_ex(('127.0.0.1', port))
                if err not in (0, 115, 36, 10035):    # EINPROGRESS & co.
                    sock.close()
                    failed += 1
                    continue
                pending[sock] = b''
                sel.register(sock, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b''
                if chunk:
                    pending[sock] += chunk
                    if not _reply_done(pending[sock]):
                        continue
                sel.unregister(sock)
                banner = pending.pop(sock)
                if chunk and banner.startswith(b'220'):
                    served += 1
                    idle.append(sock)
                else:
                    failed += 1
                    sock.close()
        serve_time = time.monotonic() - started
        delivered, error = False, None
        try:
            sock = _connect(port, timeout=10.0)
            try:
                _expect(_read_reply(sock), b'220')
                for line, code in ((b'EHLO bench.example\r\n', b'250'),
                                   (b'MAIL FROM:<w4@example.org>\r\n', b'250'),
                                   (b'RCPT TO:<w4@example.net>\r\n', b'250'),
                                   (b'DATA\r\n', b'354'),
                                   (b'Subject: W4\r\n\r\nhello\r\n.\r\n', b'250'),
                                   (b'QUIT\r\n', b'221')):
                    sock.sendall(line)
                    _expect(_read_reply(sock), code)
                delivered = True
            finally:
                sock.close()
        except (OSError, BenchError) as exc:
            error = '%s: %s' % (type(exc).__name__, exc)
    finally:
        for sock in list(pending) + idle:
            sock.close()
        sel.close()
    return {'served': served, 'failed': failed, 'delivered': delivered,
            'error': error, 'serve_time': serve_time, 'nofile': limit}


def main():
    """Answer workload requests from stdin until it closes."""
    raise_nofile()
    ops = {'W1': client_w1, 'W2': client_w2, 'W3': client_w3,
           'LAT': client_lat, 'W4': client_w4, 'PREPARE': client_prepare}
    for line in sys.stdin:
        request = json.loads(line)
        op = ops[request.pop('op')]
        try:
            answer = {'ok': True, 'result': op(**request)}
        except (OSError, BenchError) as exc:
            answer = {'ok': False, 'error': '%s: %s' % (type(exc).__name__, exc)}
        sys.stdout.write(json.dumps(answer) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
