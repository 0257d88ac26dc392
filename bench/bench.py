#!/usr/bin/env python3
"""Benchmark pysmtpd's smtpd.py against CPython 3.11's smtpd, aiosmtpd and a floor.

Every server runs as its own process on 127.0.0.1 and is driven by a raw-socket
load generator in another process, so the client's cost stays low, constant and
out of the measurement.  Server CPU (user + system) is read from /proc around
each workload only, once the server is idle before and after it: the sum of
/proc/<pid>/task/*/schedstat in nanoseconds (every server here is one thread),
else utime+stime from /proc/<pid>/stat in clock ticks.  Peak memory is VmHWM
minus the VmRSS before, from /proc/<pid>/status.

Servers (all accept every message and discard it):

    pysmtpd     this checkout's smtpd.py (bench/../smtpd.py), on --python
                (python3.12 by default) with pyasyncore/pyasynchat
    cpython311  CPython 3.11's own stdlib smtpd, on python3.11 -I
    aiosmtpd    aiosmtpd's SMTP protocol on asyncio, on --python
    floor       a bare select() loop that sends one canned reply per line
                without parsing: the cost floor of an SMTP server in Python

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

Because the machine is shared and noisy, the headline numbers are ratios of
servers measured in the same run: rounds are interleaved (round r runs every
server on a workload before moving on) and each ratio is the median of the
per-round ratios.  The run is a report: it exits 0 whether or not targets
are met and ends with `targets met: k/n`.

Usage:

    python3 bench/bench.py                  # full run, 5 rounds (minutes)
    python3 bench/bench.py --quick          # under a minute, smaller counts
    python3 bench/bench.py --markdown       # tables as Markdown
    python3 bench/bench.py --profile pysmtpd:W1 --profile pysmtpd:W2
"""

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.abspath(__file__)
CHECKOUT = os.path.dirname(os.path.dirname(BENCH))

SERVERS = ('pysmtpd', 'cpython311', 'aiosmtpd', 'floor')
DATA_SIZE_LIMIT = 64 * 1024 * 1024
REPLY_TIMEOUT = 30.0          # seconds to wait for any single SMTP reply
READY_TIMEOUT = 30.0          # seconds for a server process to start listening
WANTED_NOFILE = 8192          # W4 needs 1500+ descriptors in client and server

FULL = dict(rounds=5, w1_conns=4, w1_msgs=1000, w1_size=2048,
            w2_size=32 * 1024 * 1024, w3_conns=2000, lat_n=200,
            w4_conns=1500, w4_deadline=60.0)
QUICK = dict(rounds=3, w1_conns=4, w1_msgs=200, w1_size=2048,
             w2_size=8 * 1024 * 1024, w3_conns=400, lat_n=40,
             w4_conns=1500, w4_deadline=20.0)

# Targets: (key, label, comparison, threshold).  Ratios are per round, then median.
TARGETS = (
    ('w1_ratio', 'W1 CPU per message, pysmtpd / cpython311', '<=', 0.55),
    ('w2_ratio', 'W2 CPU, pysmtpd / cpython311', '<=', 0.30),
    ('w2_mem', 'W2 peak RSS growth, pysmtpd (x msg size)', '<=', 2.5),
    ('w3_ratio', 'W3 CPU per connection, pysmtpd / cpython311', '<=', 0.80),
    ('lat', 'EHLO round trip, pysmtpd (ms)', '<=', 2.0),
    ('w4', 'W4 pysmtpd: all served, message delivered', '==', True),
    ('w1_aio', 'W1 CPU per message, aiosmtpd / pysmtpd', '>=', 4.0),
    ('w3_aio', 'W3 CPU per connection, aiosmtpd / pysmtpd', '>=', 3.0),
)
INFO = (
    ('w1_floor', 'W1 CPU per message, floor / cpython311'),
    ('w2_floor', 'W2 CPU, floor / cpython311'),
    ('w3_floor', 'W3 CPU per connection, floor / cpython311'),
)


class BenchError(Exception):
    """A server misbehaved or a step did not finish in time."""


def _raise_nofile(wanted=WANTED_NOFILE):
    """Raise the soft RLIMIT_NOFILE towards `wanted` (W4 holds 1500 sockets)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _die_with_parent():
    """preexec_fn: have Linux SIGTERM the child if the benchmark dies."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------------------
# Server side: `bench.py _serve KIND`, run by the server's own interpreter.

_EHLO_REPLY = (b'250-floor\r\n250-SIZE 67108864\r\n250-8BITMIME\r\n'
               b'250 HELP\r\n')


def _smtpd_server(limit):
    import warnings
    with warnings.catch_warnings():
        # 3.11's smtpd and asyncore warn on import; pysmtpd should not.
        warnings.simplefilter('ignore', DeprecationWarning)
        import asyncore
        import smtpd

    class DiscardServer(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            return None

    server = DiscardServer(('127.0.0.1', 0), None, data_size_limit=limit)
    import sysconfig
    stdlib = os.path.dirname(os.path.realpath(smtpd.__file__)) == \
        os.path.realpath(sysconfig.get_paths()['stdlib'])
    info = {'port': server.socket.getsockname()[1],
            'smtpd': os.path.realpath(smtpd.__file__), 'stdlib': stdlib}
    return info, asyncore.loop


def _aiosmtpd_server(limit):
    import asyncio
    import aiosmtpd
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server, session, envelope):
            return '250 OK'

    handler = Discard()
    # Look the name up once, as aiosmtpd's own Controller does; the SMTP
    # default would call getfqdn() on every connection.
    hostname = socket.getfqdn()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, data_size_limit=limit, hostname=hostname),
        host='127.0.0.1', port=0, backlog=1024))
    info = {'port': server.sockets[0].getsockname()[1],
            'aiosmtpd': aiosmtpd.__version__}
    return info, loop.run_forever


def _floor_server(limit):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(('127.0.0.1', 0))
    listener.listen(1024)
    lfd = listener.fileno()
    # fd -> [socket, partial command line, DATA chunks or None]: one thread,
    # a plain select() loop, one canned reply per line, no parsing.
    conns = {}
    fds = [lfd]

    def close(fd):
        conns.pop(fd)[0].close()
        fds.remove(fd)

    def handle(fd):
        state = conns[fd]
        sock = state[0]
        chunk = sock.recv(65536)   # larger buffers are mmap()ed: sys time
        if not chunk:
            close(fd)
            return
        if state[2] is not None:
            # The client waits for our reply, so the end of the data is the
            # end of what we have: only the tail is looked at.
            state[2].append(chunk)
            tail = chunk if len(chunk) >= 5 else b''.join(state[2][-5:])
            if tail.endswith(b'\r\n.\r\n') or tail == b'.\r\n':
                state[2] = None
                sock.send(b'250 OK\r\n')
            return
        buf = state[1] + chunk if state[1] else chunk
        start = 0
        while state[2] is None:
            end = buf.find(b'\n', start)
            if end < 0:
                break
            verb = buf[start:start + 4].upper()
            start = end + 1
            if verb == b'DATA':
                state[2] = []
                sock.send(b'354 End data with <CR><LF>.<CR><LF>\r\n')
            elif verb == b'EHLO':
                sock.send(_EHLO_REPLY)
            elif verb == b'QUIT':
                sock.send(b'221 Bye\r\n')
                close(fd)
                return
            else:
                sock.send(b'250 OK\r\n')
        state[1] = buf[start:]

    def run():
        while True:
            readable, _, _ = select.select(fds, [], [])
            for fd in readable:
                if fd == lfd:
                    conn, _ = listener.accept()
                    conns[conn.fileno()] = [conn, b'', None]
                    fds.append(conn.fileno())
                    conn.send(b'220 floor ESMTP\r\n')
                elif fd in conns:
                    try:
                        handle(fd)
                    except OSError:
                        close(fd)

    return {'port': listener.getsockname()[1]}, run


def _install_profiler(path, clock):
    """SIGUSR1 starts cProfile in the main thread, SIGUSR2 stops and dumps it.

    With clock 'cpu' the profile counts CPU time, not wall time: a send() on
    loopback or a select() otherwise shows the time the server sat waiting or
    preempted by the client.
    """
    import cProfile
    import io
    import pstats
    if clock == 'cpu':
        profiler = cProfile.Profile(time.process_time)
    else:
        profiler = cProfile.Profile()

    def start(signum, frame):
        profiler.enable()

    def stop(signum, frame):
        profiler.disable()
        profiler.dump_stats(path)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs()
        out.write('--- top 25 by cumulative time ---\n')
        stats.sort_stats('cumulative').print_stats(25)
        out.write('--- top 25 by total (own) time ---\n')
        stats.sort_stats('tottime').print_stats(25)
        with open(path + '.txt', 'w') as f:
            f.write(out.getvalue())

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def serve_main(argv):
    parser = argparse.ArgumentParser(prog='bench.py _serve')
    parser.add_argument('kind', choices=('smtpd', 'aiosmtpd', 'floor'))
    parser.add_argument('--data-size-limit', type=int, default=DATA_SIZE_LIMIT)
    parser.add_argument('--profile-to')
    parser.add_argument('--profile-clock', choices=('cpu', 'wall'), default='cpu')
    args = parser.parse_args(argv)
    _raise_nofile()
    make = {'smtpd': _smtpd_server, 'aiosmtpd': _aiosmtpd_server,
            'floor': _floor_server}[args.kind]
    info, run = make(args.data_size_limit)
    if args.profile_to:
        _install_profiler(args.profile_to, args.profile_clock)
    info['python'] = sys.version.split()[0]
    sys.stdout.write(json.dumps(info) + '\n')
    sys.stdout.flush()
    run()


# ---------------------------------------------------------------------------
# Load generator: `bench.py _client`, JSON requests on stdin, results on stdout.

_TCP_QUICKACK = getattr(socket, 'TCP_QUICKACK', None)


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


_FILLER = (b'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed '
           b'do eiusmod tem\r\n')          # 78 bytes with its CRLF


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
    import selectors
    limit = _raise_nofile(conns + 256)
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


def client_main():
    _raise_nofile()
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


# ---------------------------------------------------------------------------
# Controller.

_CLK_TCK = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


def cpu_seconds(pid):
    """CPU time used so far by a process, in seconds.

    The sum of /proc/<pid>/task/*/schedstat (nanoseconds, every live thread;
    all servers here are single-threaded loops), else utime+stime from
    /proc/<pid>/stat in clock ticks (10 ms: too coarse for the quick counts).
    """
    try:
        total = 0
        for tid in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_status_kb(pid, key):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise BenchError('%s not in /proc/%d/status' % (key, pid))


def _read_line(fd, deadline, what):
    data = b''
    while not data.endswith(b'\n'):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError('timed out waiting for %s' % what)
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BenchError('%s: process ended' % what)
            data += chunk
    return data.decode()


class ServerSpec:
    """How to start one kind of server."""

    def __init__(self, name, python, kind, pythonpath=None, flags=(),
                 expect_file=None, expect_stdlib=False):
        self.name = name
        self.python = python
        self.kind = kind
        self.pythonpath = pythonpath
        self.flags = list(flags)
        self.expect_file = expect_file
        self.expect_stdlib = expect_stdlib

    def env(self, **extra):
        env = dict(os.environ)
        for var in ('PYTHONPATH', 'PYTHONSTARTUP', 'PYTHONHOME'):
            env.pop(var, None)
        if self.pythonpath:
            env['PYTHONPATH'] = self.pythonpath
        env.update(extra)
        return env

    def check_smtpd(self, path, stdlib):
        if self.expect_stdlib and not stdlib:
            raise BenchError('%s imported %s, not the stdlib smtpd'
                             % (self.name, path))
        if self.expect_file and os.path.realpath(path) != self.expect_file:
            raise BenchError('%s imported %s, not %s'
                             % (self.name, path, self.expect_file))


class Server:
    """One running server process."""

    def __init__(self, spec, workdir, profile_to=None, profile_clock='cpu'):
        self.spec = spec
        argv = [spec.python] + spec.flags + [BENCH, '_serve', spec.kind,
                                             '--data-size-limit', str(DATA_SIZE_LIMIT)]
        if profile_to:
            argv += ['--profile-to', profile_to, '--profile-clock', profile_clock]
        self.log = tempfile.NamedTemporaryFile(
            'w+', dir=workdir, prefix=spec.name + '-', suffix='.log', delete=False)
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env=spec.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.log, preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        try:
            line = _read_line(self.proc.stdout.fileno(),
                              time.monotonic() + READY_TIMEOUT,
                              '%s to start' % spec.name)
        except BenchError as exc:
            self.stop()
            raise BenchError('%s\n%s' % (exc, self.stderr_tail()))
        self.info = json.loads(line)
        self.port = self.info['port']
        if 'smtpd' in self.info:
            try:
                spec.check_smtpd(self.info['smtpd'], self.info['stdlib'])
            except BenchError:
                self.stop()
                raise

    def cpu(self):
        return cpu_seconds(self.pid)

    def settle(self, quiet=0.06, limit=2.0):
        """Wait until the server stops using CPU; return its CPU seconds."""
        last = self.cpu()
        deadline = time.monotonic() + limit
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.cpu()
            if now - last > 0.001:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                break
        return last

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, lines=6):
        self.log.flush()
        with open(self.log.name) as f:
            return ''.join(f.readlines()[-lines:]).rstrip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.log.close()


class Client:
    """The load generator process."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self._start()

    def _start(self):
        self.log = open(os.path.join(self.workdir, 'client.log'), 'a')
        self.proc = subprocess.Popen(
            [sys.executable, BENCH, '_client'], cwd=self.workdir,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            preexec_fn=_die_with_parent)

    def call(self, op, timeout, **params):
        """Run workload `op` in the load generator; return its result."""
        params['op'] = op
        try:
            self.proc.stdin.write((json.dumps(params) + '\n').encode())
            self.proc.stdin.flush()
            line = _read_line(self.proc.stdout.fileno(),
                              time.monotonic() + timeout, 'load generator (%s)' % op)
        except (BenchError, OSError) as exc:
            self.stop()          # its state is unknown: start afresh
            self._start()
            raise BenchError('load generator: %s' % exc)
        answer = json.loads(line)
        if not answer['ok']:
            raise BenchError(answer['error'])
        return answer['result']

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.proc.stdout.close()
        self.log.close()


def measure(server, client, op, timeout, **params):
    """Run one workload; return (server CPU seconds, client result)."""
    before = server.settle()
    result = client.call(op, timeout, **params)
    after = server.settle()
    if not server.alive():
        raise BenchError('%s died: %s' % (server.spec.name, server.stderr_tail()))
    return after - before, result


_SINK_MODULE = '''\
"""Discarding server class for `python -m smtpd -c benchsink.Sink`."""
import json
import os
import smtpd
import sysconfig


def _note(text):
    with open(os.environ['BENCH_MARKER'], 'a') as f:
        f.write(text + '\\n')


class Sink(smtpd.SMTPServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        here = os.path.realpath(smtpd.__file__)
        stdlib = os.path.realpath(sysconfig.get_paths()['stdlib'])
        _note('listening ' + json.dumps([here, os.path.dirname(here) == stdlib]))

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        _note('delivered %d' % len(data))
'''


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_w4(spec, client, workdir, conns, deadline):
    """W4 against `python -m smtpd -n -c benchsink.Sink`."""
    cli_dir = tempfile.mkdtemp(prefix='w4-' + spec.name + '-', dir=workdir)
    with open(os.path.join(cli_dir, 'benchsink.py'), 'w') as f:
        f.write(_SINK_MODULE)
    marker = os.path.join(cli_dir, 'marker')
    port = _free_port()
    flags = [f for f in spec.flags if f != '-I']    # -m smtpd needs cwd on the path
    argv = [spec.python] + flags + ['-m', 'smtpd', '-n', '-c', 'benchsink.Sink',
                                    '127.0.0.1:%d' % port]
    log = open(os.path.join(cli_dir, 'stderr'), 'w+')
    proc = subprocess.Popen(argv, cwd=cli_dir, env=spec.env(BENCH_MARKER=marker),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log, preexec_fn=_die_with_parent)
    try:
        end = time.monotonic() + READY_TIMEOUT
        notes = ''
        while 'listening' not in notes:
            if proc.poll() is not None or time.monotonic() > end:
                log.seek(0)
                raise BenchError('W4 %s CLI did not start: %s'
                                 % (spec.name, log.read()[-500:]))
            time.sleep(0.05)
            if os.path.exists(marker):
                with open(marker) as f:
                    notes = f.read()
        smtpd_file, stdlib = json.loads(
            notes.split('listening ', 1)[1].split('\n', 1)[0])
        spec.check_smtpd(smtpd_file, stdlib)
        result = client.call('W4', deadline + 60, port=port, conns=conns,
                             deadline=deadline)
        with open(marker) as f:
            result['delivered'] = result['delivered'] and 'delivered' in f.read()
        result['alive'] = proc.poll() is None
        log.seek(0)
        errors = [line for line in log.read().splitlines() if line.strip()]
        result['died'] = errors[-1].strip() if errors and not result['alive'] else None
        result['conns'] = conns
        return result
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratios(num, den):
    return [a / b if a is not None and b else None for a, b in zip(num, den)]


def build_specs(args):
    smtpd_path = os.path.realpath(args.smtpd)
    return {
        'pysmtpd': ServerSpec('pysmtpd', args.python, 'smtpd',
                              pythonpath=os.path.dirname(smtpd_path),
                              expect_file=smtpd_path),
        'cpython311': ServerSpec('cpython311', args.oracle_python, 'smtpd',
                                 flags=['-I', '-W', 'ignore::DeprecationWarning'],
                                 expect_stdlib=True),
        'aiosmtpd': ServerSpec('aiosmtpd', args.python, 'aiosmtpd'),
        'floor': ServerSpec('floor', args.python, 'floor'),
    }


def snapshot_smtpd(spec, path, workdir):
    """Run a copy of smtpd.py taken now, so that edits made to it during the
    run (W2 and W4 start fresh servers) do not mix two versions in one run."""
    import hashlib
    snapdir = os.path.join(workdir, 'pysmtpd')
    os.mkdir(snapdir)
    copy = os.path.join(snapdir, 'smtpd.py')
    shutil.copyfile(path, copy)
    with open(copy, 'rb') as f:
        spec.digest = hashlib.sha256(f.read()).hexdigest()[:12]
    spec.source = os.path.realpath(path)
    spec.pythonpath = snapdir
    spec.expect_file = os.path.realpath(copy)


def check_available(specs, names, args):
    """Drop servers whose interpreter or packages are missing, saying why."""
    needs = {'pysmtpd': 'asyncore, asynchat', 'cpython311': 'smtpd',
             'aiosmtpd': 'aiosmtpd', 'floor': 'socket'}
    usable = []
    for name in names:
        spec = specs[name]
        if name == 'pysmtpd' and not os.path.exists(args.smtpd):
            print('skipping pysmtpd: %s does not exist' % args.smtpd, file=sys.stderr)
            continue
        code = 'import warnings; warnings.simplefilter("ignore"); import %s' % needs[name]
        cmd = [spec.python] + [f for f in spec.flags if f == '-I'] + ['-c', code]
        try:
            ok = subprocess.run(cmd, env=spec.env(), cwd=tempfile.gettempdir(),
                                capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok and args.install and name in ('pysmtpd', 'aiosmtpd'):
            pkgs = ['pyasyncore', 'pyasynchat'] if name == 'pysmtpd' else ['aiosmtpd']
            subprocess.run([spec.python, '-m', 'pip', 'install', '-q'] + pkgs,
                           timeout=600)
            ok = subprocess.run(cmd, env=spec.env(), cwd=tempfile.gettempdir(),
                                capture_output=True, timeout=60).returncode == 0
        if ok:
            usable.append(name)
        else:
            print('skipping %s: `%s` cannot import %s (try --install, or '
                  '`%s -m pip install %s`)' % (
                      name, spec.python, needs[name], spec.python,
                      'pyasyncore pyasynchat' if name == 'pysmtpd' else needs[name]),
                  file=sys.stderr)
    return usable


def run_benchmark(args, cfg, specs, names, workdir, client, say):
    rounds = cfg['rounds']
    data = {w: {n: [None] * rounds for n in names}
            for w in ('W1', 'W2cpu', 'W2mem', 'W3', 'LAT')}
    errors = []
    servers = {}
    workloads = [w for w in ('W1', 'W3', 'LAT', 'W2') if w in args.workloads]
    try:
        for name in names:
            try:
                servers[name] = Server(specs[name], workdir)
            except BenchError as exc:
                errors.append('%s: %s' % (name, exc))
        if 'W2' in workloads:
            client.call('PREPARE', 120, size=cfg['w2_size'])
        for name, server in servers.items():       # warm-up, not measured
            try:
                client.call('W1', 60, port=server.port, conns=1, msgs=20,
                            size=cfg['w1_size'])
                client.call('W3', 60, port=server.port, conns=20)
            except BenchError as exc:
                errors.append('%s warm-up: %s' % (name, exc))
        for r in range(rounds):
            # Rotate the order each round so no server always goes first.
            order = names[r % len(names):] + names[:r % len(names)]
            say('round %d/%d ...' % (r + 1, rounds))
            for wl in workloads:
                for name in order:
                    t0 = time.monotonic()
                    try:
                        record_round(wl, name, r, servers, specs, workdir,
                                     client, cfg, data)
                    except BenchError as exc:
                        errors.append('round %d %s %s: %s' % (r + 1, wl, name, exc))
                    if args.verbose:
                        say('  %-3s %-10s %.1f s' % (wl, name, time.monotonic() - t0))
    finally:
        for server in servers.values():
            server.stop()
    w4 = {}
    if 'W4' in args.workloads and cfg['w4_conns']:
        for name in names:
            if specs[name].kind != 'smtpd':
                continue
            say('W4 %s ...' % name)
            try:
                w4[name] = run_w4(specs[name], client, workdir,
                                  cfg['w4_conns'], cfg['w4_deadline'])
            except BenchError as exc:
                errors.append('W4 %s: %s' % (name, exc))
    infos = {n: s.info for n, s in servers.items()}
    return data, w4, errors, infos


def record_round(wl, name, r, servers, specs, workdir, client, cfg, data):
    if wl == 'W2':
        server = Server(specs[name], workdir)     # fresh, for a clean peak
        try:
            rss_before = proc_status_kb(server.pid, 'VmRSS')
            cpu, result = measure(server, client, 'W2', 600, port=server.port,
                                  size=cfg['w2_size'])
            hwm = proc_status_kb(server.pid, 'VmHWM')
        finally:
            server.stop()
        data['W2cpu'][name][r] = cpu
        data['W2mem'][name][r] = (hwm - rss_before) * 1024 / result['message_size']
        cfg['w2_message_size'] = result['message_size']
        return
    if name not in servers:
        return
    server = servers[name]
    if wl == 'W1':
        cpu, result = measure(server, client, 'W1', 600, port=server.port,
                              conns=cfg['w1_conns'], msgs=cfg['w1_msgs'],
                              size=cfg['w1_size'])
        data['W1'][name][r] = cpu * 1000 / result['messages']
    elif wl == 'W3':
        cpu, result = measure(server, client, 'W3', 900, port=server.port,
                              conns=cfg['w3_conns'], quickack=cfg['w3_quickack'])
        data['W3'][name][r] = cpu * 1000 / result['connections']
    elif wl == 'LAT':
        result = client.call('LAT', 300, port=server.port, n=cfg['lat_n'])
        data['LAT'][name][r] = statistics.median(result['samples_ms'])


# ---------------------------------------------------------------------------
# Report.

def _fmt(value, digits=3):
    if value is None:
        return 'n/a'
    if isinstance(value, str):
        return value
    return '%.*f' % (digits, value)


def _spread(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ''
    return '%.2f-%.2f' % (min(values), max(values))


def evaluate(data, w4, names):
    """Per-round ratios, medians, and each target's verdict."""
    def col(w, n):
        return data[w].get(n, [])

    checks = {}
    if 'pysmtpd' in names and 'cpython311' in names:
        for key, w in (('w1_ratio', 'W1'), ('w2_ratio', 'W2cpu'), ('w3_ratio', 'W3')):
            checks[key] = _ratios(col(w, 'pysmtpd'), col(w, 'cpython311'))
    if 'pysmtpd' in names:
        checks['w2_mem'] = col('W2mem', 'pysmtpd')
        checks['lat'] = col('LAT', 'pysmtpd')
    if 'pysmtpd' in names and 'aiosmtpd' in names:
        checks['w1_aio'] = _ratios(col('W1', 'aiosmtpd'), col('W1', 'pysmtpd'))
        checks['w3_aio'] = _ratios(col('W3', 'aiosmtpd'), col('W3', 'pysmtpd'))
    if 'floor' in names and 'cpython311' in names:
        checks['w1_floor'] = _ratios(col('W1', 'floor'), col('W1', 'cpython311'))
        checks['w2_floor'] = _ratios(col('W2cpu', 'floor'), col('W2cpu', 'cpython311'))
        checks['w3_floor'] = _ratios(col('W3', 'floor'), col('W3', 'cpython311'))
    rows = []
    for key, label, op, threshold in TARGETS:
        if key == 'w4':
            res = w4.get('pysmtpd')
            if res is None:
                rows.append((label, 'not run', '', 'all served', 'SKIP'))
                continue
            ok = res['served'] == res['conns'] and res['delivered']
            value = '%d/%d %s' % (res['served'], res['conns'],
                                  'delivered' if res['delivered'] else 'NOT delivered')
            rows.append((label, value, '', 'all + delivered', 'PASS' if ok else 'FAIL'))
            continue
        value = _median(checks.get(key, []))
        if value is None:
            rows.append((label, 'n/a', '', '%s %g' % (op, threshold), 'SKIP'))
            continue
        ok = value <= threshold if op == '<=' else value >= threshold
        rows.append((label, '%.2f' % value, _spread(checks[key]),
                     '%s %g' % (op, threshold), 'PASS' if ok else 'FAIL'))
    info = []
    for key, label in INFO:
        value = _median(checks.get(key, []))
        if value is not None:
            info.append((label, '%.2f' % value, _spread(checks[key]), '', 'info'))
    return rows, info


def _w4_cell(res):
    if res is None:
        return 'n/a'
    ok = res['served'] == res['conns'] and res['delivered']
    text = '%d/%d, %s' % (res['served'], res['conns'],
                          'delivered' if res['delivered'] else 'not delivered')
    return text + ('' if ok else ' FAIL')


def render(names, data, w4, rows, info, markdown):
    metrics = [
        ('W1 CPU ms/msg (= s per 1000 msgs)', 'W1', 3),
        ('W2 CPU s, whole message', 'W2cpu', 3),
        ('W2 peak RSS growth (x msg size)', 'W2mem', 2),
        ('W3 CPU ms/conn (= s per 1000 conns)', 'W3', 3),
        ('EHLO round trip ms (median)', 'LAT', 3),
    ]
    head = ['metric'] + list(names)
    table = []
    for label, key, digits in metrics:
        if any(v is not None for n in names for v in data[key][n]):
            table.append([label] + [_fmt(_median(data[key][n]), digits) for n in names])
    if w4:
        table.append(['W4 idle conns served, message']
                     + [_w4_cell(w4.get(n)) for n in names])
    check_head = ['check', 'median', 'rounds min-max', 'target', 'result']
    checks = [list(r) for r in rows + info]
    out = []
    if markdown:
        for hdr, body in ((head, table), (check_head, checks)):
            out.append('| ' + ' | '.join(hdr) + ' |')
            out.append('|' + '|'.join(['---'] + ['---:'] * (len(hdr) - 1)) + '|')
            out.extend('| ' + ' | '.join(r) + ' |' for r in body)
            out.append('')
    else:
        for hdr, body in ((head, table), (check_head, checks)):
            widths = [max(len(r[i]) for r in [hdr] + body) for i in range(len(hdr))]
            for r in [hdr] + body:
                out.append('  '.join([r[0].ljust(widths[0])] +
                                     [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
            out.append('')
    met = sum(1 for r in rows if r[4] == 'PASS')
    judged = sum(1 for r in rows if r[4] in ('PASS', 'FAIL'))
    out.append('targets met: %d/%d' % (met, judged))
    return '\n'.join(out)


def describe(cfg, names, infos, w4, quick, workloads):
    """The header: what ran, on what."""
    lines = ['pysmtpd benchmark (%s): %d round(s), interleaved; each number is the '
             'median over rounds, each ratio the median of per-round ratios.'
             % ('QUICK: smaller counts' if quick else 'full', cfg['rounds'])]
    for n in names:
        i = infos.get(n, {})
        extra = i.get('smtpd') or ('aiosmtpd %s' % i['aiosmtpd'] if 'aiosmtpd' in i else
                                   'select() loop, canned reply per line')
        lines.append('  %-10s Python %s, %s' % (n, i.get('python', '?'), extra))
    msg = cfg.get('w2_message_size', cfg['w2_size'])
    what = {'W1': 'W1 %d conns x %d msgs of ~%d bytes'
                  % (cfg['w1_conns'], cfg['w1_msgs'], cfg['w1_size']),
            'W2': 'W2 one %.1f MiB message (%d bytes), fresh server per round'
                  % (msg / 2 ** 20, msg),
            'W3': 'W3 %d sequential conns' % cfg['w3_conns'],
            'LAT': 'EHLO round trip x%d' % cfg['lat_n']}
    lines.append('  ' + '; '.join(what[w] for w in ('W1', 'W2', 'W3', 'LAT')
                                  if w in workloads))
    if w4:
        lines.append('  W4 %d idle conns to `python -m smtpd -n -c benchsink.Sink`, '
                     'then one message' % cfg['w4_conns'])
        for n, res in w4.items():
            if res.get('died'):
                lines.append('     %s CLI died: %s' % (n, res['died']))
    if quick:
        lines.append('  (--quick: smaller counts and fewer rounds than a full run)')
    return '\n'.join(lines)


def run_profiles(args, specs, workdir, client, cfg):
    for item in args.profile:
        name, _, wl = item.partition(':')
        wl = wl.upper()
        if name not in specs or wl not in ('W1', 'W2', 'W3', 'LAT'):
            print('bad --profile %r: want SERVER:W1|W2|W3|LAT' % item, file=sys.stderr)
            continue
        path = os.path.join(args.profile_dir, 'bench-profile-%s-%s.pstats' % (name, wl))
        for stale in (path, path + '.txt'):
            if os.path.exists(stale):
                os.unlink(stale)
        server = Server(specs[name], workdir, profile_to=path,
                        profile_clock=args.profile_clock)
        try:
            if wl == 'W2':
                client.call('PREPARE', 120, size=cfg['w2_size'])
            else:
                client.call('W1', 60, port=server.port, conns=1, msgs=20, size=cfg['w1_size'])
            server.settle()
            os.kill(server.pid, signal.SIGUSR1)
            params = {'W1': dict(conns=cfg['w1_conns'], msgs=cfg['w1_msgs'],
                                 size=cfg['w1_size']),
                      'W2': dict(size=cfg['w2_size']),
                      'W3': dict(conns=cfg['w3_conns']),
                      'LAT': dict(n=cfg['lat_n'])}[wl]
            cpu, _ = measure(server, client, wl, 900, port=server.port, **params)
            os.kill(server.pid, signal.SIGUSR2)
            end = time.monotonic() + 60
            while not os.path.exists(path + '.txt') and time.monotonic() < end:
                time.sleep(0.1)
            time.sleep(0.2)
            print('=== profile %s %s, %s time (server CPU %.2f s with profiler on) -> %s'
                  % (name, wl, args.profile_clock, cpu, path))
            with open(path + '.txt') as f:
                print(f.read())
        finally:
            server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark pysmtpd against CPython 3.11 smtpd, aiosmtpd and a floor.')
    parser.add_argument('--quick', action='store_true',
                        help='smaller counts and 3 rounds: under a minute')
    parser.add_argument('--rounds', type=int, help='rounds (default 5, quick 3)')
    parser.add_argument('--markdown', action='store_true', help='print Markdown tables')
    parser.add_argument('--python', default='python3.12',
                        help='interpreter for pysmtpd, aiosmtpd and floor')
    parser.add_argument('--oracle-python', default='python3.11',
                        help='interpreter whose stdlib smtpd is the baseline')
    parser.add_argument('--smtpd', default=os.path.join(CHECKOUT, 'smtpd.py'),
                        help='the smtpd.py to benchmark as pysmtpd')
    parser.add_argument('--servers', default=','.join(SERVERS),
                        help='comma-separated subset of %s' % ','.join(SERVERS))
    parser.add_argument('--workloads', default='W1,W2,W3,LAT,W4',
                        help='comma-separated subset of W1,W2,W3,LAT,W4')
    parser.add_argument('--no-w4', action='store_true', help='skip W4')
    parser.add_argument('--plain-w3', action='store_true',
                        help='W3 client without TCP_QUICKACK: 3.11 then stalls '
                             '~40 ms per session and its CPU per connection '
                             'roughly doubles (idle wake-ups)')
    parser.add_argument('--install', action='store_true',
                        help='pip install pyasyncore/pyasynchat/aiosmtpd if missing')
    parser.add_argument('--profile', action='append', metavar='SERVER:WORKLOAD',
                        help='only profile SERVER (cProfile) on WORKLOAD; repeatable')
    parser.add_argument('--profile-clock', choices=('cpu', 'wall'), default='cpu',
                        help='what --profile times (default: CPU time)')
    parser.add_argument('--profile-dir', default=tempfile.gettempdir(),
                        help='where --profile writes .pstats and .txt files')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='also print every round\'s raw numbers')
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds:
        cfg['rounds'] = args.rounds
    cfg['w3_quickack'] = not args.plain_w3
    args.workloads = [w.strip().upper() for w in args.workloads.split(',')]
    if args.no_w4 and 'W4' in args.workloads:
        args.workloads.remove('W4')
    wanted = [n.strip() for n in args.servers.split(',') if n.strip()]
    for n in wanted:
        if n not in SERVERS:
            parser.error('unknown server %r' % n)
    nofile = _raise_nofile()                # inherited by servers and client
    specs = build_specs(args)
    if args.profile:
        wanted = sorted({p.partition(':')[0] for p in args.profile} & set(SERVERS))
    names = check_available(specs, wanted, args)

    def say(text):
        print(text, file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix='pysmtpd-bench-')
    if 'pysmtpd' in names:
        snapshot_smtpd(specs['pysmtpd'], args.smtpd, workdir)
    client = Client(workdir)
    started = time.monotonic()
    try:
        if args.profile:
            run_profiles(args, specs, workdir, client, cfg)
            return 0
        if nofile is not None and nofile < cfg['w4_conns'] + 64:
            say('RLIMIT_NOFILE is %d: W4 needs %d descriptors' % (nofile, cfg['w4_conns'] + 64))
        data, w4, errors, infos = run_benchmark(args, cfg, specs, names, workdir,
                                                client, say)
    finally:
        client.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows, info = evaluate(data, w4, names)
    if 'pysmtpd' in infos:
        infos['pysmtpd']['smtpd'] = '%s (copy taken at start, sha256 %s...)' % (
            specs['pysmtpd'].source, specs['pysmtpd'].digest)
    print(describe(cfg, names, infos, w4, args.quick, args.workloads))
    print()
    print(render(names, data, w4, rows, info, args.markdown))
    if args.verbose:
        print('\nper-round values:')
        for w in ('W1', 'W2cpu', 'W2mem', 'W3', 'LAT'):
            for n in names:
                print('  %-6s %-10s %s' % (w, n, ' '.join(_fmt(v) for v in data[w][n])))
    for e in errors:
        print('error: ' + e)
    print('elapsed %.0f s' % (time.monotonic() - started))
    return 0


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '_serve':
        serve_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == '_client':
        client_main()
    else:
        sys.exit(main())
