"""A hypothesis grammar of SMTP client sessions for the differential tests.

sessions(config) draws a _diffharness.Session: a greeting (or none), a few
actions, and an ending, cut into TCP chunks.  The productions are chosen to
reach every branch of CPython 3.11's SMTPChannel (tests/_diffcoverage.py
measures that):

* every command, in upper, lower, mixed and "folded" case (``ſ`` and ``ı``
  upper-case to ASCII ``S`` and ``I``), with odd spacing, Unicode whitespace
  and arguments where none belong;
* angle, bare, quoted, source-routed, empty and malformed addresses,
  including the ones 3.11's email header parser raises on;
* ESMTP parameters: SIZE (small, huge, non-digit, Unicode digits, valueless),
  BODY, SMTPUTF8, unknown, valueless and malformed ones;
* command lines of 510..550 bytes and longer, before and after EHLO;
* non-ASCII and invalid UTF-8 bytes, lines with bare CR or LF;
* DATA bodies with dot-stuffing, lone dots, bare CR/LF, sizes around the
  configured data_size_limit, the terminator split across sends;
* pipelined commands, chunks split at any byte (inside a UTF-8 character or
  the terminator), half-close, close and reset.

Everything is drawn from hypothesis strategies, so a derandomized
``@settings`` makes the sessions reproducible and a failure shrinks to a
small session.
"""

from _diffharness import Session
from hypothesis import strategies as st

CRLF = b'\r\n'

COMMANDS = ['HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'QUIT',
            'VRFY', 'EXPN', 'HELP']

# Separators between a verb and its argument.  Only an ASCII space splits
# the command from its argument in 3.11; the others end up in the command
# name or are stripped from the argument as Unicode whitespace.
SEPARATORS = [' '] * 24 + ['  ', ' \t', '\t', ' \xa0', ' \u3000', '\x0b']
TRAILERS = [''] * 20 + [' ', '  ', '\t', '\xa0', '\u2003']
ASCII_TRAILERS = [''] * 20 + [' ', '  ', '\t']

HOSTNAMES = ['client.example.org', 'x', '[127.0.0.1]', '0', 'a b',
             'h\u00fcst.example', 'UPPER.EXAMPLE']

# Addresses 3.11 accepts (some of them surprisingly).
GOOD_ADDRESSES = [
    '<a@example.org>', '<user.name+tag@example.com>', 'bare@example.org',
    '<>', '<"quoted local"@example.org>',
    '<@relay.example,@r2.example:route@example.org>', '<a@[127.0.0.1]>',
    '< spaced@example.org >', '(comment)a@example.org', 'a@example.org (c)',
    'just-local', '<a b@c>', 'two words', '<\u00fcser@ex\u00e4mple.org>',
    '\u00fcser@ex\u00e4mple.org', '"\u00fc"', '<reject-me@example.org>',
    '<refuse-me@example.org>', '<a@b', 'a@b>', '.a@b', 'a..b@c',
]
# Addresses the email header parser raises on (row bad-address) or that
# parse to an empty address.
BAD_ADDRESSES = [
    '<', '<a@', '<a@example.org.>', '@', '"', '<@a:', 'a@', 'a@b@c',
    '<<a@b>>', 'a@[', 'a@[ ', ',', '""', 'a@b.', '[', '""(\u00fc)', '(x)""',
]
ADDRESS_FUZZ_ALPHABET = 'ab.@<>"()[],:; \\\u00fc'

MAIL_KEYWORDS = ['FROM:'] * 10 + ['from:', 'From:', 'FROM: ', 'FROM :',
                                  'FROM', '', 'TO:', 'fROM:\t']
RCPT_KEYWORDS = ['TO:'] * 10 + ['to:', 'To:', 'TO: ', 'TO :', 'TO', '',
                                'FROM:', 'tO:\t']

MAIL_PARAMS = [
    'SIZE=100', 'SIZE=999', 'SIZE=1000', 'SIZE=1001', 'SIZE=999999999',
    'SIZE=33554432', 'SIZE=33554433', 'SIZE=0', 'SIZE=abc', 'SIZE=',
    'SIZE', 'size=10', '\u017fize=10', 'SIZE=\u00b2', 'SIZE=\u0661\u0662',
    'BODY=7BIT', 'BODY=8BITMIME', 'body=8bitmime', 'BODY=BINARYMIME',
    'BODY=', 'BODY', 'BODY=8B\u0131TM\u0131ME', 'SMTPUTF8', 'smtputf8',
    'SMTPUTF8=yes', 'SMTPUTF8=', 'XFOO=bar', 'XFOO', 'X-FOO=1', '=x',
    'A=B=C', '\u00fc=1', 'NOTIFY=NEVER', 'AUTH=<>', '>',
]
RCPT_PARAMS = ['NOTIFY=NEVER', 'XFOO=1', 'FOO', 'A-B=1', 'SIZE=10', '=x',
               'ORCPT=rfc822;a@b', 'BODY=', '\u00fc']
PARAM_SEPARATORS = [' '] * 6 + ['  ', '\t', '\xa0', '\u2003']

HELP_ARGS = ['FOO', '\u00fc', 'mail from', ' ', 'EXPN', 'HELP', 'STARTTLS']

UNKNOWN_LINES = [
    'FOO', 'XYZZY', 'MAILFROM:<a@b>', 'HELLO there', 'STARTTLS',
    'AUTH PLAIN', 'BDAT 10', 'TURN', 'SEND FROM:<a@b>', 'ETRN x', ' NOOP',
    '  ', ' ', '', 'NOOP\tx', 'MAIL\tFROM:<a@b>', 'NOOP\nNOOP', 'NOOP\rNOOP',
    '\x00', 'QUIT\x00', '\u00dcBER', 'MA\u0130L', '\u1e9e', 'N\u00d6OP x',
    '\u017fMTP',
]
# Bytes that are not UTF-8 (rows bad-utf8-command, split-utf8).
INVALID_UTF8_LINES = [b'\xff', b'NOOP \xff', b'MAIL FROM:<\xc3@x>', b'\xc3',
                      b'HELO \xed\xa0\x80', b'\xf0\x9f\x98', b'VRFY \x80']

BODY_LINES = [
    b'Subject: differential test', b'From: a@example.org', b'', b'hello',
    b'.', b'..', b'.leading dot', b'...', b'. ', b'\xc3\xbc non-ASCII',
    b'\xff\xfe invalid UTF-8', b'x' * 100, b'\t tab', b' ', b'bare\nLF',
    b'bare\rCR', b'\r', b'.\n', b'\n.\n', b'\r\n.', b'QUIT', b'RSET',
    b'MAIL FROM:<a@b>', b'\x00',
]
# How DATA ends; a list of pieces that are always sent as separate chunks.
TERMINATORS = [
    [b'\r\n.\r\n']] * 8 + [
    [b'\r', b'\n.\r\n'], [b'\r\n', b'.\r\n'], [b'\r\n.', b'\r\n'],
    [b'\r\n.\r', b'\n'], [b'\r\n', b'.', b'\r', b'\n'],
    [b'\n.\n', b'\r\n.\r\n'], [b'\r\n.\n', b'\r\n.\r\n'],
    [b'\r\n..\r\n', b'\r\n.\r\n'], [],
]

PADDED_LENGTHS = [509, 510, 511, 512, 513, 514, 536, 537, 538, 539, 540,
                  546, 547, 548, 549, 550, 600, 1100]


def _encode(text):
    return text.encode('utf-8') if isinstance(text, str) else text


@st.composite
def verbs(draw, name):
    """A command verb in some case; 'fold' uses non-ASCII letters."""
    style = draw(st.sampled_from(['upper'] * 6 + ['lower', 'mixed', 'fold']))
    if style == 'lower':
        return name.lower()
    if style == 'mixed':
        flips = draw(st.lists(st.booleans(), min_size=len(name),
                              max_size=len(name)))
        return ''.join(c.lower() if f else c for c, f in zip(name, flips, strict=True))
    if style == 'fold' and ('S' in name or 'I' in name):
        # 'ſ'.upper() == 'S' and 'ı'.upper() == 'I' in Python.
        return name.replace('S', '\u017f').replace('I', '\u0131')
    return name


@st.composite
def addresses(draw):
    kind = draw(st.sampled_from(['good'] * 7 + ['bad', 'fuzz']))
    if kind == 'good':
        return draw(st.sampled_from(GOOD_ADDRESSES))
    if kind == 'bad':
        return draw(st.sampled_from(BAD_ADDRESSES))
    return draw(st.text(ADDRESS_FUZZ_ALPHABET, min_size=1, max_size=8))


@st.composite
def params(draw, choices):
    chosen = draw(st.lists(st.sampled_from(choices), max_size=3))
    if not chosen:
        return ''
    text = ''
    for param in chosen:
        text += draw(st.sampled_from(PARAM_SEPARATORS)) + param
    return text


def _command(draw, name, argument, plain=False):
    """verb + separator + argument + trailer (argument None: verb alone).

    plain: a single space and no trailer, for commands meant to succeed.
    """
    line = draw(verbs(name))
    if plain:
        return line if argument is None else line + ' ' + argument
    if argument is None:
        # After a bare verb a non-ASCII trailer would just make one more
        # unknown non-ASCII command (a 3.11 crash); keep those rarer.
        return line + draw(st.sampled_from(ASCII_TRAILERS))
    line += draw(st.sampled_from(SEPARATORS)) + argument
    return line + draw(st.sampled_from(TRAILERS))


@st.composite
def mail_lines(draw, good=False):
    shape = 'full' if good else draw(st.sampled_from(
        ['full'] * 8 + ['verb', 'empty']))
    if shape == 'verb':
        return _command(draw, 'MAIL', None)
    if shape == 'empty':
        return _command(draw, 'MAIL', '')
    if good:
        keyword, address = 'FROM:', draw(st.sampled_from(GOOD_ADDRESSES[:8]))
        extra = draw(st.sampled_from(['', '', ' SIZE=100', ' BODY=8BITMIME',
                                      ' SMTPUTF8', ' BODY=7BIT SIZE=10']))
    else:
        keyword = draw(st.sampled_from(MAIL_KEYWORDS))
        address = draw(addresses())
        extra = draw(params(MAIL_PARAMS))
    return _command(draw, 'MAIL', keyword + address + extra, plain=good)


@st.composite
def rcpt_lines(draw, good=False):
    shape = 'full' if good else draw(st.sampled_from(
        ['full'] * 8 + ['verb', 'empty']))
    if shape == 'verb':
        return _command(draw, 'RCPT', None)
    if shape == 'empty':
        return _command(draw, 'RCPT', '')
    if good:
        keyword = 'TO:'
        address = draw(st.sampled_from(GOOD_ADDRESSES))
        extra = ''
    else:
        keyword = draw(st.sampled_from(RCPT_KEYWORDS))
        address = draw(addresses())
        extra = draw(params(RCPT_PARAMS))
    return _command(draw, 'RCPT', keyword + address + extra, plain=good)


@st.composite
def simple_commands(draw):
    """Any one command line (as str, or bytes when it must be invalid)."""
    kind = draw(st.sampled_from(
        ['mail', 'rcpt', 'helo', 'ehlo', 'data', 'rset', 'noop', 'quit',
         'vrfy', 'expn', 'help', 'help', 'unknown', 'argless'] * 2 +
        ['invalid']))
    if kind == 'mail':
        return draw(mail_lines())
    if kind == 'rcpt':
        return draw(rcpt_lines())
    if kind in ('helo', 'ehlo'):
        argument = draw(st.one_of(st.none(), st.just(''),
                                  st.sampled_from(HOSTNAMES)))
        return _command(draw, kind.upper(), argument)
    if kind == 'vrfy':
        argument = draw(st.one_of(st.none(), st.just(''), addresses()))
        return _command(draw, 'VRFY', argument)
    if kind == 'help':
        argument = draw(st.one_of(
            st.none(), st.sampled_from(COMMANDS).flatmap(verbs),
            st.sampled_from(HELP_ARGS)))
        return _command(draw, 'HELP', argument)
    if kind == 'unknown':
        return draw(st.sampled_from(UNKNOWN_LINES))
    if kind == 'invalid':
        return draw(st.sampled_from(INVALID_UTF8_LINES))
    # DATA, RSET, NOOP, QUIT, EXPN: with or without an argument.
    name = 'QUIT' if kind == 'argless' else kind.upper()
    argument = draw(st.sampled_from([None] * 4 + ['', 'x', 'an argument']))
    return _command(draw, name, argument)


@st.composite
def padded_lines(draw):
    """A command line of exactly a length around the 512/538/548 limits."""
    length = draw(st.sampled_from(PADDED_LENGTHS))
    prefix, suffix = draw(st.sampled_from([
        ('NOOP ', ''), ('MAIL FROM:<', '@example.org>'),
        ('MAIL FROM:<a@example.org> SIZE=10 XPAD=', ''),
        ('MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8 X=', ''),
        ('RCPT TO:<', '@example.org>'), ('HELO ', ''), ('EHLO ', ''),
        ('VRFY ', ''), ('HELP ', ''), ('XPAD', ''), ('RSET ', ''),
    ]))
    fill = draw(st.sampled_from(['a', 'a', '\u00e9']))
    room = length - len((prefix + suffix).encode('utf-8'))
    width = len(fill.encode('utf-8'))
    padding = fill * (room // width) + 'a' * (room % width)
    return prefix + padding + suffix


def _line_bytes(line, draw):
    """Encode a line and give it an ending (mostly CRLF)."""
    ending = draw(st.sampled_from([CRLF] * 12 + [b'\n', b'\r', b'\r\r\n']))
    return _encode(line) + ending


@st.composite
def bodies(draw, data_size_limit):
    """(body bytes, terminator pieces) for one DATA phase."""
    kind = draw(st.sampled_from(['lines'] * 4 + ['sized'] * 2 +
                                ['empty', 'big']))
    if kind == 'empty':
        return b'', draw(st.sampled_from(TERMINATORS))
    if kind == 'big':
        # More than one 65536-byte read of the server.
        size = draw(st.sampled_from([70000, 140000]))
        body = (b'y' * 76 + CRLF) * (size // 78)
        return body, [b'\r\n.\r\n']
    if kind == 'sized':
        # The server counts the bytes before the "\r\n.\r\n" terminator.
        # Bodies around the default 32 MiB limit would make each session
        # slow; that limit is the same code path as the 1000-byte one.
        limit = data_size_limit if data_size_limit <= 100000 else 1000
        size = limit + draw(st.integers(-3, 3))
        body = (b'z' * 98 + CRLF) * (size // 100)
        body += b'z' * (size - len(body))
        return body, [b'\r\n.\r\n']
    lines = draw(st.lists(st.sampled_from(BODY_LINES), min_size=1,
                          max_size=8))
    return CRLF.join(lines), draw(st.sampled_from(TERMINATORS))


@st.composite
def transactions(draw, data_size_limit):
    """MAIL, RCPTs, DATA and a body: mostly well-formed, sometimes not."""
    good = draw(st.sampled_from([True, True, True, False]))
    segments = [_line_bytes(draw(mail_lines(good=good)), draw)]
    for _ in range(draw(st.integers(1, 3))):
        segments.append(_line_bytes(draw(rcpt_lines(good=good)), draw))
    data = draw(st.sampled_from(['DATA'] * 6 + ['data', 'DATA ', 'DATA x']))
    segments.append(_encode(data) + CRLF)
    body, terminator = draw(bodies(data_size_limit))
    if body:
        segments.append(body)
    # Terminator pieces are forced chunk boundaries.
    segments.extend(('forced', piece) for piece in terminator)
    return segments


@st.composite
def split_utf8_lines(draw):
    """A valid UTF-8 command sent in two chunks cut inside a character."""
    line = draw(st.sampled_from(['HELO h\u00fcst', 'NOOP \u00fc',
                                 'VRFY <\u00fc@example.org>',
                                 'MAIL FROM:<\u00fc@example.org>',
                                 'EHLO \u20ac\u20ac']))
    raw = line.encode('utf-8') + CRLF
    cut = raw.index(b'\xc3' if b'\xc3' in raw else b'\xe2') + 1
    return [('forced', raw[:cut]), ('forced', raw[cut:])]


@st.composite
def actions(draw, data_size_limit):
    kind = draw(st.sampled_from(
        ['transaction'] * 7 + ['command'] * 8 + ['padded'] * 2 +
        ['pipeline', 'split-utf8']))
    if kind == 'transaction':
        return draw(transactions(data_size_limit))
    if kind == 'padded':
        return [_line_bytes(draw(padded_lines()), draw)]
    if kind == 'split-utf8':
        return draw(split_utf8_lines())
    if kind == 'pipeline':
        lines = draw(st.lists(simple_commands(), min_size=2, max_size=6))
        return [b''.join(_encode(line) + CRLF for line in lines)]
    return [_line_bytes(draw(simple_commands()), draw)]


@st.composite
def greetings(draw):
    kind = draw(st.sampled_from(['EHLO'] * 5 + ['HELO'] * 2 + ['none', 'odd']))
    if kind == 'none':
        return []
    if kind == 'odd':
        line = draw(st.sampled_from(['EHLO', 'HELO ', 'EHLO\t x', 'ehlo  ',
                                     'EHLO \u00fc', 'HELO \xa0']))
    else:
        line = _command(draw, kind, draw(st.sampled_from(HOSTNAMES)))
    return [_encode(line) + CRLF]


@st.composite
def endings(draw):
    kind = draw(st.sampled_from(['QUIT'] * 4 + ['halfclose', 'close', 'reset',
                                                'none', 'quit-pipelined']))
    if kind == 'QUIT':
        return [_encode(_command(draw, 'QUIT', None)) + CRLF], []
    if kind == 'quit-pipelined':
        # 3.11 goes on processing what follows QUIT in the same read.
        return [b'QUIT\r\nNOOP\r\nHELP\r\n'], []
    if kind == 'none':
        return [], []
    return [], [(kind,)]


def _chunk(segments, mode, draw):
    """Cut the session's byte segments into the chunks sent one by one."""
    chunks = []
    for segment in segments:
        forced = isinstance(segment, tuple)
        data = segment[1] if forced else segment
        if mode == 'split' and len(data) > 1 and not forced:
            cuts = sorted(set(draw(st.lists(
                st.integers(1, len(data) - 1), max_size=2))))
            pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [None], strict=True)]
        elif mode == 'bytes' and not forced and len(data) <= 64:
            pieces = [data[i:i + 1] for i in range(len(data))]
        else:
            pieces = [data]
        for index, piece in enumerate(pieces):
            join = (not forced and index == 0 and chunks
                    and not chunks[-1][0] and mode in ('pipelined', 'all')
                    and (mode == 'all' or draw(st.booleans())))
            if join:
                chunks[-1] = (False, chunks[-1][1] + piece)
            else:
                chunks.append((forced, piece))
    return [('send', data) for _, data in chunks if data]


@st.composite
def sessions(draw, config):
    """A whole Session for a server configured by config."""
    data_size_limit = config['kwargs'].get('data_size_limit', 33554432) or 1000
    segments = list(draw(greetings()))
    for _ in range(draw(st.integers(1, 6))):
        segments.extend(draw(actions(data_size_limit)))
    tail, close_steps = draw(endings())
    segments.extend(tail)
    mode = draw(st.sampled_from(['lines'] * 6 + ['pipelined'] * 2 +
                                ['split'] * 2 + ['bytes', 'all']))
    return Session(_chunk(segments, mode, draw) + close_steps)


def line_steps(*lines):
    """Steps sending each line (str or bytes) with CRLF, one per chunk."""
    return [('send', _encode(line) + CRLF) for line in lines]


_EHLO = 'EHLO client.example.org'
_ENVELOPE = ('MAIL FROM:<a@example.org>', 'RCPT TO:<b@example.org>', 'DATA')


def known_sessions(config):
    """Hand-written sessions run before the drawn ones, in every run.

    Each pins down one quirk of 3.11 or one deviations-table row, so that
    they are exercised whatever the random sessions happen to be.
    """
    limit = config['kwargs'].get('data_size_limit', 33554432)
    steps = line_steps
    envelope = [_EHLO, *_ENVELOPE]
    sessions = [
        # Case folding: 'ſ'.upper() == 'S', 'ı'.upper() == 'I'.
        steps('HELO x', 'R\u017fET', 'QU\u0131T'),
        # QUIT does not stop what follows in the same read.
        [('send', b'EHLO x\r\nQUIT\r\nNOOP\r\nHELP\r\n')],
        # Lone dot straight after DATA is data, not the end.
        steps(*envelope) + [('send', b'.\r\n'), ('send', b'x\r\n.\r\n')],
        # RCPT options of a refused RCPT are what process_message gets.
        steps(_EHLO, 'MAIL FROM:<a@example.org> BODY=8BITMIME',
              'RCPT TO:<b@example.org>', 'RCPT TO:<c@example.org> FOO=1',
              'DATA', 'body\r\n.', 'QUIT'),
        # A message ending in an empty line, one with no header/body break,
        # one ending in a bare LF (where PureProxy inserts X-Peer).
        steps(*envelope, 'Subject: s\r\n\r\nbody\r\n\r\n.', 'QUIT'),
        steps(*envelope, 'no header break\r\n.', 'QUIT'),
        steps(*envelope) + [('send', b'bare LF\n\r\n.\r\n')],
        # HELP for every command, before and after EHLO.
        steps(*['HELP ' + name for name in COMMANDS], 'HELP', 'HELP x',
              'EHLO x', 'HELP MAIL', 'HELP rcpt', 'HELP nothing'),
        # Line length limits: 512 before EHLO, MAIL 512+26(+10) after.
        steps('NOOP ' + 'a' * 507, 'NOOP ' + 'a' * 508, 'EHLO x',
              'MAIL FROM:<%s@example.org>' % ('a' * 513),
              'MAIL FROM:<%s@example.org>' % ('a' * 514),
              'NOOP ' + 'a' * 520),
        # SIZE: Unicode digits int() accepts, too big, not a number.
        steps(_EHLO, 'MAIL FROM:<a@b> SIZE=\u0661\u0662', 'RSET',
              'MAIL FROM:<a@b> SIZE=33554433', 'MAIL FROM:<a@b> SIZE=x1',
              'MAIL FROM:<a@b> SIZE=1 BODY=x', 'MAIL FROM:<a@b> X=1'),
        # SMTPUTF8 takes no value; it makes replies UTF-8, so that an
        # unknown non-ASCII command is echoed instead of failing to encode.
        steps(_EHLO, 'MAIL FROM:<a@b> SMTPUTF8=yes', 'MAIL FROM:<a@b> BODY',
              'MAIL FROM:<a@b> SMTPUTF8', '\u00dcBER', 'QUIT'),
        # bad-utf8-command
        [('send', b'EHLO x\r\n'), ('send', b'NOOP \xff\r\n')],
        steps('\u00dcBER'),
        steps('VRFY ""(\u00fc)'),
        # bad-address (and VRFY of an empty address: 502)
        steps(_EHLO, 'MAIL FROM:<'),
        steps(_EHLO, 'MAIL FROM:<a@example.org.>'),
        steps(_EHLO, 'MAIL FROM:<a@b>', 'RCPT TO:a@['),
        steps('VRFY ""', 'VRFY <'),
        # split-utf8: a character cut between two sends.
        [('send', b'HELO h\xc3'), ('send', b'\xbcst\r\n'),
         ('send', b'QUIT\r\n')],
        # Abrupt ends: half-close in DATA, reset.
        steps(*envelope) + [('send', b'partial'), ('halfclose',)],
        steps(_EHLO) + [('reset',)],
        # proxy-errors (a PureProxy's upstream refuses "refuse..."),
        # proxy-8bit.
        steps(_EHLO, 'MAIL FROM:<a@b>', 'RCPT TO:<refuse@x>', 'DATA',
              'x\r\n.', 'QUIT'),
        steps(_EHLO, 'MAIL FROM:<a@b>', 'RCPT TO:<refuse@x>',
              'RCPT TO:<b@x>', 'DATA', 'x\r\n.', 'QUIT'),
        steps(*envelope, '\u00fc 8-bit\r\n.', 'QUIT'),
    ]
    if limit and limit <= 100000:
        # data-too-big: after 552 3.11 stays in DATA.
        sessions.append(steps(*envelope) + [
            ('send', b'z' * (limit + 1) + b'\r\n.\r\n'),
            ('send', b'RSET\r\nQUIT\r\n')])
    return [Session(steps) for steps in sessions]
