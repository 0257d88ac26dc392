"""Server driver for the differential tests: one smtpd server, its events.

Run by either interpreter (the python3.11 oracle with the stdlib smtpd, or the
Python under test with this project's smtpd on PYTHONPATH)::

    python _diffserver.py CONFIG_JSON [--lifetime SECONDS]
                          [--coverage-lib DIR --coverage-data FILE]

CONFIG_JSON names the server class and its keyword arguments, for example
``{"cls": "PureProxy", "kwargs": {"decode_data": true},
"remote": ["127.0.0.1", 2525]}``.
The server listens on 127.0.0.1:0 and runs ``asyncore.loop`` until standard
input reaches end of file (the test closes it, or dies) or the lifetime ends.

Standard output carries only events, one JSON object per line; whatever the
server itself prints (asyncore's error log, DebuggingServer's message dump)
is kept away from it.  Events:

``ready``          port, smtpd.__file__, interpreter facts
``open``           a channel was created (greeting pushed); peer port
``send``           bytes a channel wrote to its socket (latin-1 text)
``progress``       after each handle_read/handle_write: bytes read so far
                   and whether output is still queued
``message``        a process_message call: reprs of its arguments
``message_done``   its return value (or the exception it raised) and what
                   it printed to stdout
``crash``          an exception that reached handle_error: type, text, frames
``close``          the channel closed

The recording subclasses only observe: each override calls the inherited
method with the same arguments and returns what it returned, so the server
behaves exactly as the plain class would.  The test uses ``progress`` to know
when the server has consumed every byte it was sent, which makes each session
deterministic without idle timeouts.

This file must stay self-contained (no imports from the tests directory): the
oracle runs it with ``python3.11 -I`` so that no project directory is on its
path.
"""

import contextlib
import io
import json
import os
import socket
import sys
import threading
import time
import traceback
import warnings

_EVENTS_FD = None
_SHUTTING_DOWN = False


def emit(event, **fields):
    """Write one event line to the events pipe (the original stdout)."""
    if _SHUTTING_DOWN:
        # The test has stopped listening; closing the leftovers is not news.
        return
    fields['ev'] = event
    line = (json.dumps(fields) + '\n').encode('ascii')
    while line:
        line = line[os.write(_EVENTS_FD, line):]


def _frames(tb):
    """(file name, function) of every frame of a traceback, outermost first."""
    return [[os.path.basename(frame.filename), frame.name]
            for frame in traceback.extract_tb(tb)]


def _parse_argv(argv):
    config = json.loads(argv[1])
    options = {'--lifetime': '3600', '--coverage-lib': None,
               '--coverage-data': None}
    rest = argv[2:]
    while rest:
        name, value, rest = rest[0], rest[1], rest[2:]
        if name not in options:
            raise SystemExit('unknown option %s' % name)
        options[name] = value
    return config, options


def _start_coverage(options):
    """Measure smtpd.py with branch coverage (for _diffcoverage.py)."""
    if not options['--coverage-data']:
        return None
    sys.path.insert(0, options['--coverage-lib'])
    import coverage
    cov = coverage.Coverage(data_file=options['--coverage-data'], branch=True,
                            include=['*/smtpd.py'])
    cov.start()
    return cov


def _build_server_class(smtpd, config):
    base = getattr(smtpd, config['cls'])

    class RecordingChannel(smtpd.SMTPChannel):
        """SMTPChannel that reports its traffic; behaviour unchanged."""

        def __init__(self, server, conn, addr, *args, **kwargs):
            # Set before the base __init__, which already sends the greeting.
            self._diff_port = addr[1]
            self._diff_read = 0
            self._diff_closed = False
            # Without TCP_NODELAY each multi-line reply waits out the
            # client's delayed ACK (tens of ms).  The bytes are the same;
            # only the run time changes.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(server, conn, addr, *args, **kwargs)
            if not self._diff_closed:
                emit('open', peer=self._diff_port,
                     pending=self._diff_pending())

        def _diff_pending(self):
            return bool(getattr(self, 'producer_fifo', ()))

        def _diff_progress(self):
            # Nothing after close: a closed channel reads and writes no more.
            if not self._diff_closed:
                emit('progress', peer=self._diff_port, read=self._diff_read,
                     pending=self._diff_pending())

        def recv(self, buffer_size):
            data = super().recv(buffer_size)
            self._diff_read += len(data)
            return data

        def send(self, data):
            sent = super().send(data)
            if sent:
                emit('send', peer=self._diff_port,
                     data=bytes(data[:sent]).decode('latin-1'))
            return sent

        def handle_read(self):
            super().handle_read()
            self._diff_progress()

        def handle_write(self):
            super().handle_write()
            self._diff_progress()

        def handle_error(self):
            exc_type, exc, tb = sys.exc_info()
            emit('crash', peer=self._diff_port, type=exc_type.__name__,
                 text=str(exc), frames=_frames(tb))
            super().handle_error()

        def close(self):
            if not self._diff_closed:
                self._diff_closed = True
                emit('close', peer=self._diff_port)
            super().close()

    class RecordingServer(base):
        """The configured server class with process_message observed."""

        channel_class = RecordingChannel

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            emit('message', peer=peer[1], host=repr(peer[0]),
                 mailfrom=repr(mailfrom), rcpttos=repr(rcpttos),
                 data=repr(data), kwargs=repr(kwargs))
            printed = io.StringIO()
            result = raised = None
            try:
                with contextlib.redirect_stdout(printed):
                    result = self._diff_process(peer, mailfrom, rcpttos, data,
                                                **kwargs)
            except BaseException as exc:
                raised = type(exc).__name__
                raise
            finally:
                emit('message_done', peer=peer[1], result=repr(result),
                     raised=raised, stdout=printed.getvalue())
            return result

        if base is smtpd.SMTPServer:
            def _diff_process(self, peer, mailfrom, rcpttos, data, **kwargs):
                # The base class raises NotImplementedError; answer like a
                # real server instead, and sometimes with a status of our
                # own, which takes found_terminator's "status given" branch.
                # The status is ASCII so that it cannot fail to encode.
                if any(rcpt.lower().startswith('reject') for rcpt in rcpttos):
                    return '554 Transaction rejected by the test server'
                return None
        else:
            def _diff_process(self, peer, mailfrom, rcpttos, data, **kwargs):
                return super().process_message(peer, mailfrom, rcpttos, data,
                                               **kwargs)

        def handle_error(self):
            exc_type, exc, tb = sys.exc_info()
            emit('server_crash', type=exc_type.__name__, text=str(exc),
                 frames=_frames(tb))
            super().handle_error()

    return RecordingServer


def _watch_stdin(stop):
    """Set stop when standard input ends: the test is done (or gone)."""
    try:
        while os.read(0, 4096):
            pass
    finally:
        stop.set()


def main(argv):
    global _EVENTS_FD, _SHUTTING_DOWN
    config, options = _parse_argv(argv)
    # Events own the real stdout; anything else printed goes to stderr.
    _EVENTS_FD = os.dup(1)
    sys.stdout = sys.stderr
    cov = _start_coverage(options)
    with warnings.catch_warnings():
        # 3.11 warns that smtpd/asyncore/asynchat are deprecated.
        warnings.simplefilter('ignore', DeprecationWarning)
        import asyncore

        import smtpd
    server_class = _build_server_class(smtpd, config)
    remote = tuple(config.get('remote') or ('127.0.0.1', 9))
    server = server_class(('127.0.0.1', 0), remote, **config.get('kwargs', {}))
    emit('ready', port=server.socket.getsockname()[1],
         smtpd_file=os.path.abspath(smtpd.__file__),
         asyncore_file=os.path.abspath(asyncore.__file__),
         executable=sys.executable, version=sys.version)
    stop = threading.Event()
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    deadline = time.monotonic() + float(options['--lifetime'])
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            asyncore.loop(timeout=0.05, count=1)
    finally:
        _SHUTTING_DOWN = True
        asyncore.close_all()
        if cov is not None:
            cov.stop()
            cov.save()


if __name__ == '__main__':
    main(sys.argv)
