#!/usr/bin/env python3
"""Benchmark pysmtpd's smtpd.py against CPython 3.11's smtpd, aiosmtpd and a floor.

Servers, each its own process on 127.0.0.1 (all accept every message and
discard it):

    pysmtpd     this checkout's smtpd.py (bench/../smtpd.py), on --python
                (python3.12 by default) with pyasyncore/pyasynchat
    cpython311  CPython 3.11's own stdlib smtpd, on python3.11 -I
    aiosmtpd    aiosmtpd's SMTP protocol on asyncio, on --python
    floor       a bare select() loop that sends one canned reply per line
                without parsing: the cost floor of an SMTP server in Python

A raw-socket load generator in another process drives them through the
workloads W1-W4 and LAT, and the server's CPU and peak memory are read from
/proc around each workload.  Because the machine is shared and noisy, the
headline numbers are ratios of servers measured in the same run: rounds are
interleaved (round r runs every server on a workload before moving on) and
each ratio is the median of the per-round ratios.  The run is a report: it
exits 0 whether or not targets are met and ends with `targets met: k/n`.

This file parses the command line and runs the rounds; the rest is beside it:

    servers.py    the servers, run by each server's own interpreter
    workloads.py  the load generator and its workloads
    measure.py    the server and load-generator processes, CPU and memory
    report.py     targets, verdicts and the printed tables

Usage:

    python3 bench/bench.py                  # full run, 5 rounds (minutes)
    python3 bench/bench.py --quick          # under a minute, smaller counts
    python3 bench/bench.py --markdown       # tables as Markdown
    python3 bench/bench.py --profile pysmtpd:W1 --profile pysmtpd:W2
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from measure import Client, Server, ServerSpec, measure, proc_status_kb, run_w4
from report import ROUND_METRICS, describe, evaluate, render, render_rounds
from servers import raise_nofile
from workloads import BenchError

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVERS = ('pysmtpd', 'cpython311', 'aiosmtpd', 'floor')

FULL = dict(rounds=5, w1_conns=4, w1_msgs=1000, w1_size=2048,
            w2_size=32 * 1024 * 1024, w3_conns=2000, lat_n=200,
            w4_conns=1500, w4_deadline=60.0)
QUICK = dict(rounds=3, w1_conns=4, w1_msgs=200, w1_size=2048,
             w2_size=8 * 1024 * 1024, w3_conns=400, lat_n=40,
             w4_conns=1500, w4_deadline=20.0)


def build_specs(args):
    """The ServerSpec of every server, by name, from the command line."""
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
    """Run the interleaved rounds, then W4.

    Return (data, w4, errors, infos): report.py's per-round figures, W4's
    results by server, what went wrong, and what each server announced.
    """
    rounds = cfg['rounds']
    data = {w: {n: [None] * rounds for n in names} for w in ROUND_METRICS}
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
    """Run workload `wl` on server `name` and store round r's figure in data."""
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


def run_profiles(args, specs, workdir, client, cfg):
    """Run each --profile SERVER:WORKLOAD under cProfile and print its top."""
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
    """Run the benchmark the command line asks for and print the report."""
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
    nofile = raise_nofile()                # inherited by servers and client
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
        print()
        print(render_rounds(names, data))
    for e in errors:
        print('error: ' + e)
    print('elapsed %.0f s' % (time.monotonic() - started))
    return 0


if __name__ == '__main__':
    sys.exit(main())
