"""The report: targets, their verdicts, and the text that bench.py prints.

A run's figures come in `data`, a dict of metric -> server name -> one value
per round (None where a round failed): 'W1' CPU ms per message, 'W2cpu' CPU
seconds for the whole message, 'W2mem' peak RSS growth over the message size,
'W3' CPU ms per connection and 'LAT' the median EHLO round trip in ms.  W4's
results come apart, one client result per server name.
"""

import statistics

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
# Ratios shown for information only.
INFO = (
    ('w1_floor', 'W1 CPU per message, floor / cpython311'),
    ('w2_floor', 'W2 CPU, floor / cpython311'),
    ('w3_floor', 'W3 CPU per connection, floor / cpython311'),
)
ROUND_METRICS = ('W1', 'W2cpu', 'W2mem', 'W3', 'LAT')


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratios(num, den):
    return [a / b if a is not None and b else None
            for a, b in zip(num, den, strict=True)]


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
    """Per-round ratios, medians, and each target's verdict.

    Return (rows, info): a row per target and one per informative ratio,
    each (label, median, rounds min-max, target, result).
    """
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
    """The metrics table and the checks table, plain or Markdown, then the
    `targets met: k/n` line."""
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
                                     [c.rjust(w) for c, w in
                                      zip(r[1:], widths[1:], strict=True)]))
            out.append('')
    met = sum(1 for r in rows if r[4] == 'PASS')
    judged = sum(1 for r in rows if r[4] in ('PASS', 'FAIL'))
    out.append('targets met: %d/%d' % (met, judged))
    return '\n'.join(out)


def render_rounds(names, data):
    """Every round's raw value of every metric (for -v)."""
    lines = ['per-round values:']
    for w in ROUND_METRICS:
        for n in names:
            lines.append('  %-6s %-10s %s' % (w, n, ' '.join(_fmt(v) for v in data[w][n])))
    return '\n'.join(lines)


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
