"""The servers under test: `python servers.py KIND`, one process each.

measure.Server starts this file with the server's own interpreter: for the
baseline that is python3.11 -I, whose sys.path holds neither PYTHONPATH nor
this file's directory, so the file imports only the standard library (and,
inside the functions, the server to measure).  It prints one JSON line (the
port, the Python version and, for smtpd, which smtpd.py it imported), then
serves until it is terminated.

Kinds (all accept every message and discard it):

    smtpd       an smtpd.SMTPServer subclass, from whichever smtpd the
                interpreter imports: a copy of this checkout's smtpd.py (on
                PYTHONPATH) or 3.11's stdlib one
    aiosmtpd    aiosmtpd's SMTP protocol on asyncio
    floor       a bare select() loop that sends one canned reply per line
                without parsing: the cost floor of an SMTP server in Python

The load generator (workloads.py) and the benchmark (bench.py) share
raise_nofile() from here.
"""

import argparse
import json
import os
import select
import signal
import socket
import sys
import time

DATA_SIZE_LIMIT = 64 * 1024 * 1024
WANTED_NOFILE = 8192          # W4 needs 1500+ descriptors in client and server

_EHLO_REPLY = (b'250-floor\r\n250-SIZE 67108864\r\n250-8BITMIME\r\n'
               b'250 HELP\r\n')


def raise_nofile(wanted=WANTED_NOFILE):
    """Raise the soft RLIMIT_NOFILE towards `wanted` (W4 holds 1500 sockets).

    Return the new soft limit, or None where there is no resource module.
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Each server factory takes the data size limit and returns (info, run):
# the JSON-able facts to announce, and the function that serves forever.

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


def install_profiler(path, clock):
    """SIGUSR1 starts cProfile in the main thread, SIGUSR2 stops and dumps it.

    The stats go to `path`, their top 25 by cumulative and own time to
    `path` + '.txt'.  With clock 'cpu' the profile counts CPU time, not wall
    time: a send() on loopback or a select() otherwise shows the time the
    server sat waiting or preempted by the client.
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


def main(argv):
    """Start a server of the kind argv names, announce it, serve forever."""
    parser = argparse.ArgumentParser()
    parser.add_argument('kind', choices=('smtpd', 'aiosmtpd', 'floor'))
    parser.add_argument('--data-size-limit', type=int, default=DATA_SIZE_LIMIT)
    parser.add_argument('--profile-to')
    parser.add_argument('--profile-clock', choices=('cpu', 'wall'), default='cpu')
    args = parser.parse_args(argv)
    raise_nofile()
    make = {'smtpd': _smtpd_server, 'aiosmtpd': _aiosmtpd_server,
            'floor': _floor_server}[args.kind]
    info, run = make(args.data_size_limit)
    if args.profile_to:
        install_profiler(args.profile_to, args.profile_clock)
    info['python'] = sys.version.split()[0]
    sys.stdout.write(json.dumps(info) + '\n')
    sys.stdout.flush()
    run()


if __name__ == '__main__':
    main(sys.argv[1:])
