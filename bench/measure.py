"""Server and load-generator processes, and what a workload costs a server.

Server CPU (user + system) is read from /proc around each workload only, once
the server is idle before and after it: the sum of
/proc/<pid>/task/*/schedstat in nanoseconds (every server here is one thread),
else utime+stime from /proc/<pid>/stat in clock ticks.  Peak memory is VmHWM
minus the VmRSS before, from /proc/<pid>/status.

Server runs servers.py and Client runs workloads.py, each as a process of its
own; run_w4() runs 3.11's command line, `python -m smtpd`, instead.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

from servers import DATA_SIZE_LIMIT
from workloads import BenchError

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_PY = os.path.join(HERE, 'servers.py')
WORKLOADS_PY = os.path.join(HERE, 'workloads.py')

READY_TIMEOUT = 30.0          # seconds for a server process to start listening

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
    """The kB figure of `key` (VmRSS, VmHWM, ...) in /proc/<pid>/status."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise BenchError('%s not in /proc/%d/status' % (key, pid))


def _die_with_parent():
    """preexec_fn: have Linux SIGTERM the child if the benchmark dies."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG
    except Exception:
        pass


def _wait_or_kill(proc, timeout=5):
    """Wait for a child told to end; kill it if it lingers."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


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
        """The server's environment: ours, less what would change its imports."""
        env = dict(os.environ)
        for var in ('PYTHONPATH', 'PYTHONSTARTUP', 'PYTHONHOME'):
            env.pop(var, None)
        if self.pythonpath:
            env['PYTHONPATH'] = self.pythonpath
        env.update(extra)
        return env

    def check_smtpd(self, path, stdlib):
        """Raise BenchError unless the server imported the smtpd it should."""
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
        argv = [spec.python] + spec.flags + [SERVERS_PY, spec.kind,
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
            raise BenchError('%s\n%s' % (exc, self.stderr_tail())) from exc
        self.info = json.loads(line)
        self.port = self.info['port']
        if 'smtpd' in self.info:
            try:
                spec.check_smtpd(self.info['smtpd'], self.info['stdlib'])
            except BenchError:
                self.stop()
                raise

    def cpu(self):
        """The server's CPU seconds so far."""
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
        """True while the server process runs."""
        return self.proc.poll() is None

    def stderr_tail(self, lines=6):
        """The last lines the server wrote to stderr."""
        self.log.flush()
        with open(self.log.name) as f:
            return ''.join(f.readlines()[-lines:]).rstrip()

    def stop(self):
        """Terminate the server (kill it if it lingers)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            _wait_or_kill(self.proc)
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
            [sys.executable, WORKLOADS_PY], cwd=self.workdir,
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
            raise BenchError('load generator: %s' % exc) from exc
        answer = json.loads(line)
        if not answer['ok']:
            raise BenchError(answer['error'])
        return answer['result']

    def stop(self):
        """Close the load generator's stdin and wait for it to end."""
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            _wait_or_kill(self.proc)
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
    """W4 against `python -m smtpd -n -c benchsink.Sink`; return the client's
    result, with whether the message arrived and whether the CLI survived."""
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
            _wait_or_kill(proc)
        log.close()
