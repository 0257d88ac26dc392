"""An SMTP server for test_hostile.py, run in a subprocess.

    python _hostile_server.py [--decode-data | --smtputf8] [--size N]
                              [--report-reads]

It serves smtpd.SMTPServer on 127.0.0.1 (an ephemeral port) with a real
asyncore loop and reports what happens as lines on stdout, each flushed at
once so the test sees them while the server runs:

    READY <port>                  listening
    EVENT {"event": "message", ...}   process_message was called
    EVENT {"event": "error", ...}     handle_error was called (a traceback)
    EVENT {"event": "read", ...}      a channel read from its socket
                                      (only with --report-reads)
    SYNCED <token>                answer to "SYNC <token>" on stdin
    STOPPED                       SIGTERM was received; the loop has ended

Each event is reported before the reply that could tell a client about it
(process_message before its 250, handle_error before the close), and a SYNC
request is read by the same loop and answered on the same stdout.  So once
the test has read the answer to a SYNC it sent after a client saw a reply,
the events behind that reply are in what it has read: it can count them
without guessing how long the report takes to arrive.

Anything else on stdout or stderr is the server's own output (asyncore logs
"uncaptured python exception" there), which the test counts too.  SIGTERM
closes every socket and exits with status 0.
"""

import argparse
import json
import signal
import sys
import time
import traceback
import warnings

with warnings.catch_warnings():
    # 3.11's smtpd (the oracle) warns on import; ours must not, but either
    # way a warning is not what this server reports.
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore

    import smtpd


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emit_event(**fields):
    emit("EVENT " + json.dumps(fields))


class RecordingChannel(smtpd.SMTPChannel):
    """An SMTPChannel that reports every handle_error call before handling it."""

    # With --report-reads, every read from the socket too, so that a test
    # can tell that the server has had one piece before it sends the next.
    report_reads = False

    def recv(self, buffer_size):
        data = super().recv(buffer_size)
        if self.report_reads:
            emit_event(event="read", peer=list(self.addr), size=len(data))
        return data

    def handle_error(self):
        emit_event(event="error", where="channel",
                   traceback=traceback.format_exc())
        super().handle_error()


class RecordingServer(smtpd.SMTPServer):
    """Reports each delivered message; accepts every message (250 OK)."""

    channel_class = RecordingChannel

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if isinstance(data, bytes):
            # latin-1 maps every byte to one code point, so the test gets
            # the exact bytes back with .encode('latin-1').
            kind, text = "bytes", data.decode("latin-1")
        else:
            kind, text = "str", data
        emit_event(event="message", peer=list(peer), mailfrom=mailfrom,
                   rcpttos=list(rcpttos), kind=kind, data=text,
                   kwargs=sorted(kwargs))
        return None

    def handle_error(self):
        emit_event(event="error", where="server",
                   traceback=traceback.format_exc())
        super().handle_error()


class ControlChannel(asyncore.file_dispatcher):
    """Answers each "SYNC <token>" line on stdin: "SYNCED <token>"."""

    def __init__(self, fd, socket_map):
        super().__init__(fd, map=socket_map)
        self._pending = b""

    def writable(self):
        return False

    def handle_read(self):
        self._pending += self.recv(4096)
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            request, _, token = line.decode("ascii").partition(" ")
            if request != "SYNC":
                raise ValueError("unknown control request %r" % line)
            emit("SYNCED " + token)

    def handle_close(self):
        # The test has gone or closed our stdin: nothing more to answer.
        self.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--decode-data", action="store_true")
    parser.add_argument("--smtputf8", action="store_true")
    parser.add_argument("--size", type=int, default=smtpd.DATA_SIZE_DEFAULT)
    parser.add_argument("--report-reads", action="store_true")
    args = parser.parse_args()
    RecordingChannel.report_reads = args.report_reads

    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))

    socket_map = {}
    server = RecordingServer(("127.0.0.1", 0), None,
                             data_size_limit=args.size, map=socket_map,
                             enable_SMTPUTF8=args.smtputf8,
                             decode_data=args.decode_data)
    ControlChannel(sys.stdin.fileno(), socket_map)
    emit("READY %d" % server.socket.getsockname()[1])
    # Short passes so that SIGTERM is noticed promptly; poll() so that more
    # than 1024 descriptors work whatever select() allows.
    while not stopping:
        if socket_map:
            asyncore.loop(timeout=0.05, use_poll=True, map=socket_map, count=1)
        else:
            time.sleep(0.05)
    asyncore.close_all(map=socket_map)
    emit("STOPPED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
