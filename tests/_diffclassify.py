"""Which differences between the 3.11 oracle and pysmtpd are allowed, and why.

pysmtpd must match CPython 3.11's smtpd byte for byte except where the
deviations table in README.md (rows with stable ids) says otherwise.  Given
the two transcripts of one session (see _diffharness), classify() finds the
first token where they differ and explains it by a table row, or not at all.

A difference is allowed only when

* the oracle crashed there (an exception reached handle_error), the crash is
  one a table row describes (checked by exception type, the function it came
  from and the configuration), and pysmtpd did not crash; or
* the oracle answered ``552 Error: Too much mail data`` earlier in the
  session (row ``data-too-big``: 3.11 then stays in DATA while pysmtpd
  returns to command state, so the two conversations can no longer agree); or
* a PureProxy's upstream refused every recipient and the oracle's
  process_message still returned None, i.e. ``250 OK`` (row
  ``proxy-errors``), while pysmtpd returned a 4xx/5xx reply.

Once a session has diverged for an allowed reason the rest of it is not
compared: the two servers are in different states from there on.
"""

import ast

#: The deviations-table rows this module can name.
ROWS = {
    'bad-utf8-command': 'invalid UTF-8 or an unencodable echo in a command '
                        'line: 3.11 raises, pysmtpd replies',
    'bad-address': "an address the email header parser can't parse: 3.11 "
                   'raises, pysmtpd treats it as no address',
    'split-utf8': 'decode_data=True decodes per TCP read in 3.11 (raises on '
                  'split or invalid UTF-8); pysmtpd decodes per line',
    'data-too-big': 'after 552 Too much mail data 3.11 stays in DATA; '
                    'pysmtpd returns to command state',
    'proxy-bytes': 'PureProxy with decode_data=False crashes in 3.11; '
                   'pysmtpd relays the bytes',
    'proxy-8bit': 'PureProxy with an 8-bit message crashes in 3.11; '
                  'pysmtpd relays it as 8BITMIME',
    'proxy-errors': 'upstream refused every recipient: 3.11 says 250 OK, '
                    'pysmtpd replies the refusal',
    'size-param': 'SIZE without a value, or digits int() cannot read: 3.11 '
                  'raises, pysmtpd replies 501',
    'proxy-ascii': 'PureProxy with a non-ASCII envelope address: 3.11 '
                   'raises in smtplib, pysmtpd replies 553',
}

TOO_MUCH_DATA = ('reply', repr(b'552 Error: Too much mail data\r\n'))

# Exceptions 3.11's _getaddr lets out of email._header_value_parser.  The
# table row names IndexError and HeaderParseError; the parser also raises
# AttributeError ('a@[') and UnboundLocalError ('a@[ ') on the same path.
_PARSER_ERRORS = {'IndexError', 'HeaderParseError', 'AttributeError',
                  'UnboundLocalError'}


class Verdict:
    """The outcome of comparing two transcripts of one session."""

    def __init__(self, index=None, row=None, reason='', crash=None):
        self.index = index      # first differing token, None if identical
        self.row = row          # the table row that allows it, if any
        self.reason = reason
        self.crash = crash      # the oracle's exception type, if it crashed

    @property
    def identical(self):
        return self.index is None

    @property
    def allowed(self):
        return self.index is None or self.row is not None

    @property
    def label(self):
        """'identical', 'UNEXPLAINED', or the row (with the oracle's crash)."""
        if self.identical:
            return 'identical'
        if self.row is None:
            return 'UNEXPLAINED'
        return '%s(%s)' % (self.row, self.crash) if self.crash else self.row

    def __repr__(self):
        if self.identical:
            return '<Verdict identical>'
        return '<Verdict at token %d: %s (%s)>' % (
            self.index, self.row or 'UNEXPLAINED', self.reason)


def first_difference(a, b):
    """Index of the first token where lists a and b differ, or None."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    if len(a) != len(b):
        return min(len(a), len(b))
    return None


def classify(config, oracle, ours):
    """Compare the oracle's Transcript with ours; return a Verdict."""
    index = first_difference(oracle.tokens, ours.tokens)
    if index is None:
        return Verdict()
    theirs = _token(oracle, index)
    mine = _token(ours, index)
    if theirs[0] == 'crash' and mine[0] != 'crash':
        row, reason = _crash_row(config, oracle, index)
        return Verdict(index, row, reason, crash=theirs[1])
    if TOO_MUCH_DATA in oracle.tokens[:index]:
        return Verdict(index, 'data-too-big',
                       'the oracle is still in DATA after its 552')
    if _upstream_refused_all(config, oracle, ours, index):
        return Verdict(index, 'proxy-errors',
                       'upstream refused every recipient')
    return Verdict(index, None, 'no table row explains this difference')


def _token(transcript, index):
    if index < len(transcript.tokens):
        return transcript.tokens[index]
    return ('end',)


def _crash_row(config, oracle, index):
    """The row covering the oracle's crash at index, and a description."""
    _, exc_type, text = oracle.tokens[index]
    frames = oracle.crash_frames[index]
    ours = [name for filename, name in frames if filename == 'smtpd.py']
    innermost = frames[-1][0] if frames else ''
    where = ' <- '.join(reversed(ours)) or '?'
    said = 'oracle raised %s: %s (in %s)' % (exc_type, text, where)
    decode_data = config['kwargs'].get('decode_data', False)
    proxy = config['cls'] == 'PureProxy'

    if exc_type == 'UnicodeDecodeError':
        if not decode_data and ours[-1:] == ['found_terminator']:
            return 'bad-utf8-command', said
        if decode_data and ours[-1:] == ['collect_incoming_data']:
            return 'split-utf8', said
    elif exc_type == 'UnicodeEncodeError':
        # The only pushes that echo client text are the unknown-command
        # reply (from found_terminator) and VRFY's 502; the test server's own
        # process_message status is ASCII.
        if ours[-2:] in (['found_terminator', 'push'], ['smtp_VRFY', 'push']):
            return 'bad-utf8-command', said
        smtplib_calls = {name for filename, name in frames
                         if filename == 'smtplib.py'}
        if proxy and '_deliver' in ours and smtplib_calls & {'mail', 'rcpt'}:
            return 'proxy-ascii', said
        if proxy and '_deliver' in ours and _message_is_8bit(oracle, index):
            return 'proxy-8bit', said
    elif exc_type in ('AttributeError', 'ValueError') and (
            ours[-1:] == ['smtp_MAIL']
            and ("'bool' object has no attribute 'isdigit'" in text
                 or 'invalid literal for int()' in text)):
        return 'size-param', said
    elif exc_type in _PARSER_ERRORS:
        if (ours[-1:] == ['_getaddr']
                and innermost == '_header_value_parser.py'):
            return 'bad-address', said
    elif exc_type == 'TypeError':
        if (proxy and not decode_data and ours[-1:] == ['found_terminator']
                and "unexpected keyword argument 'mail_options'" in text):
            return 'proxy-bytes', said
    return None, said + '; no table row covers this crash'


def _message_is_8bit(oracle, index):
    """Whether the last message before index has non-ASCII data."""
    for token in reversed(oracle.tokens[:index]):
        if token[0] == 'message':
            return not ast.literal_eval(token[4]).isascii()
    return False


def _upstream_refused_all(config, oracle, ours, index):
    """proxy-errors: 3.11's process_message returned None (so the client
    got 250 OK) although the upstream refused every recipient; ours
    returned a 4xx/5xx reply instead."""
    if config['cls'] != 'PureProxy':
        return False
    theirs, mine = oracle.tokens[index], _token(ours, index)
    if theirs[:2] != ('message_done', 'None') or mine[0] != 'message_done':
        return False
    status = ast.literal_eval(mine[1])
    if not isinstance(status, str) or status[:1] not in ('4', '5'):
        return False
    relay = oracle.relays.get(index + 1)
    if relay is None:
        return False
    replies = relay['rcpt_replies']
    return bool(replies) and not any(r.startswith('2') for r in replies)
