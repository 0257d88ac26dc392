#! /usr/bin/env python3
"""An RFC 5321 smtp proxy with optional RFC 1870 and RFC 6531 extensions.

Usage: %(program)s [options] [localhost:localport [remotehost:remoteport]]

Options:

    --nosetuid
    -n
        This program generally tries to setuid `nobody', unless this flag is
        set.  The setuid call will fail if this program is not run as root (in
        which case, use this flag).

    --version
    -V
        Print the version number and exit.

    --class classname
    -c classname
        Use `classname' as the concrete SMTP proxy class.  Uses `PureProxy' by
        default.

    --size limit
    -s limit
        Restrict the total size of the incoming message to "limit" number of
        bytes via the RFC 1870 SIZE extension.  Defaults to 33554432 bytes.

    --smtputf8
    -u
        Enable the SMTPUTF8 extension and behave as an RFC 6531 smtp proxy.

    --debug
    -d
        Turn on debugging prints.

    --help
    -h
        Print this message and exit.

Version: %(__version__)s

If localhost is not given then `localhost' is used, and if localport is not
given then 8025 is used.  If remotehost is not given then `localhost' is used,
and if remoteport is not given, then 25 is used.
"""

# This is pysmtpd: CPython 3.11's smtpd module, reimplemented for Python 3.12
# and later, where the standard library no longer has it (PEP 594).  It keeps
# 3.11's behaviour, replies and API exactly, except where 3.11 crashed, hung or
# lost mail; README.md lists each of those differences.
#
# The module docstring above is the command-line usage text, so it reads as
# 3.11's did.  As a library:
#
#   SMTPChannel     - one client's SMTP session (asynchat).
#   SMTPServer      - listens and makes a channel per client; subclasses
#                     override process_message() to do something with the mail.
#   DebuggingServer - prints each message on stdout.
#   PureProxy       - relays each message to another SMTP server.

import collections
import errno
import getopt
import os
import re as _re
import socket
import sys
import time
from codecs import getincrementaldecoder as _getincrementaldecoder
from email._header_value_parser import get_addr_spec, get_angle_addr
from warnings import warn

# On Python 3.12+ these come from the PyPI packages pyasyncore and pyasynchat.
import asynchat
import asyncore

__all__ = ["SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"]

program = sys.argv[0]
__version__ = 'Python SMTP proxy version 0.3'


class Devnull:
    """A write-only stream that discards everything (the default DEBUGSTREAM)."""

    def write(self, msg):
        pass

    def flush(self):
        pass


DEBUGSTREAM = Devnull()
NEWLINE = '\n'
COMMASPACE = ', '
DATA_SIZE_DEFAULT = 33554432

# Each command's syntax as HELP shows it; also the order HELP lists them in.
_COMMAND_SYNTAX = {
    'EHLO': 'EHLO hostname',
    'HELO': 'HELO hostname',
    'MAIL': 'MAIL FROM: <address>',
    'RCPT': 'RCPT TO: <address>',
    'DATA': 'DATA',
    'RSET': 'RSET',
    'NOOP': 'NOOP',
    'QUIT': 'QUIT',
    'VRFY': 'VRFY <address>',
}
_SUPPORTED_COMMANDS = 'Supported commands: ' + ' '.join(_COMMAND_SYNTAX)
_ESMTP_PARAMS = ' [SP <mail-parameters>]'

# The path nearly every client sends, <local-part@domain> with a dot-atom
# local part and a domain of letters, digits and hyphens (RFC 5321, 4.1.2),
# optionally followed by parameters.  _getaddr() reads it without the email
# package's general parser, which costs far more; tests/test_address.py checks
# that both give the same result.
_SIMPLE_PATH = _re.compile(
    r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\.)*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    r"@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+)>(?:\Z| +(?=[A-Za-z0-9]))")

# A listening socket's queue of not yet accepted connections; 3.11's 5 drops
# most of a burst of clients.
_LISTEN_BACKLOG = 1024
# How many queued connections one pass of the event loop accepts once many
# clients are connected.
_ACCEPT_BATCH = 64
# accept() errors meaning "no descriptors or buffers right now", and how long
# to leave the queued clients waiting before trying again.
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE,
                                     errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE = 0.1


def usage(code, msg=''):
    """Print the usage text (and msg, if any) to stderr and exit with code."""
    print(__doc__ % globals(), file=sys.stderr)
    if msg:
        print(msg, file=sys.stderr)
    sys.exit(code)


def _check_options(enable_SMTPUTF8, decode_data):
    # SMTPUTF8 needs the data as bytes: there is no saying how a client
    # encoded a message that isn't UTF-8.
    if enable_SMTPUTF8 and decode_data:
        raise ValueError("decode_data and enable_SMTPUTF8 cannot"
                         " be set to True at the same time")


def _debugging():
    # Formatting for the default Devnull stream is wasted work, a whole
    # message's repr() above all.  (A subclass of Devnull may well keep what
    # it is given.)
    return type(DEBUGSTREAM) is not Devnull


def _debug(*args):
    """print() to DEBUGSTREAM."""
    if _debugging():
        print(*args, file=DEBUGSTREAM)


_fqdn_cache = (None, None)


def _getfqdn():
    """socket.getfqdn(), looked up once per process.

    It can block for seconds on a host with broken DNS, and 3.11 called it for
    every connection.  The cache is keyed by the function, so code that replaces
    smtpd.socket (CPython's own tests do) still gets its own answer.
    """
    global _fqdn_cache
    lookup = socket.getfqdn
    cached_lookup, fqdn = _fqdn_cache
    if cached_lookup is not lookup:
        fqdn = lookup()
        _fqdn_cache = (lookup, fqdn)
    return fqdn


def _disable_nagle(sock):
    """Turn Nagle's algorithm off on a TCP socket; False if it isn't one.

    3.11 sent the lines of a multi-line reply (EHLO) one send each, and with
    Nagle's algorithm each waited for the client's delayed ACK, about 40 ms.
    Only TCP sockets have the option (and the fake sockets of tests none).
    """
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
    except (AttributeError, OSError):
        pass
    return False


class _DeprecatedAlias:
    """A pre-3.3 private attribute name (``__server``) for a public one.

    Reading or setting it works on the public attribute, with a
    DeprecationWarning that points at the caller.
    """

    def __init__(self, public_name):
        self.public_name = public_name

    def __set_name__(self, owner, name):
        # The class body says __server; Python stores _SMTPChannel__server.
        self.old_name = '__' + name.partition('__')[2]

    def __get__(self, channel, owner=None):
        if channel is None:
            return self
        warn("Access to %s attribute on SMTPChannel is deprecated, use '%s' "
             "instead" % (self.old_name, self.public_name),
             DeprecationWarning, 2)
        return getattr(channel, self.public_name)

    def __set__(self, channel, value):
        warn("Setting %s attribute on SMTPChannel is deprecated, set '%s' "
             "instead" % (self.old_name, self.public_name),
             DeprecationWarning, 2)
        setattr(channel, self.public_name, value)


class SMTPChannel(asynchat.async_chat):
    """One client's SMTP session.

    It reads command lines and message data from the connection, answers
    each command, and hands every complete message to the server's
    process_message().  Each SMTP command XYZ is the method smtp_XYZ(arg), so
    a subclass adds or changes commands by defining such methods.
    """

    COMMAND = 0
    DATA = 1

    command_size_limit = 512
    # Per-command line limits, raised by ESMTP extensions after EHLO: SIZE
    # (RFC 1870) allows MAIL 26 more bytes, SMTPUTF8 (RFC 6531) 10 more.  Every
    # channel works on its own empty copy of this class attribute; 3.11 shared
    # it, so one client's EHLO changed the limits of all the others.
    command_size_limits = collections.defaultdict(
        lambda limit=command_size_limit: limit)

    @property
    def max_command_size_limit(self):
        """The longest command line this session may send."""
        return max(self.command_size_limits.values(),
                   default=self.command_size_limit)

    def __init__(self, server, conn, addr, data_size_limit=DATA_SIZE_DEFAULT,
                 map=None, enable_SMTPUTF8=False, decode_data=False):
        asynchat.async_chat.__init__(self, conn, map=map)
        # (As in 3.11, a channel refused here is already in the socket map.)
        _check_options(enable_SMTPUTF8, decode_data)
        self.smtp_server, self.conn, self.addr = server, conn, addr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        # 3.11's names for the pieces of its text handling: subclasses written
        # for 3.11 that copy its found_terminator() use them, _dotsep too.
        if decode_data:
            self._emptystring, self._linesep, self._newline = '', '\r\n', NEWLINE
            self._dotsep = '.'
            # Decodes each line as a whole, however TCP cut it into reads.
            self._decoder = _getincrementaldecoder('utf-8')()
        else:
            self._emptystring, self._linesep, self._newline = b'', b'\r\n', b'\n'
            self._dotsep = ord(b'.')
            self._decoder = None
        self._undecodable = False
        # Reply lines waiting to go out in one send (see _push_lines).
        self._pending_replies = None
        self._one_send_per_reply = False
        self._set_rset_state()
        self.seen_greeting = ''
        self.extended_smtp = False
        limits = type(self).command_size_limits.copy()
        limits.clear()
        self.command_size_limits = limits
        self.fqdn = _getfqdn()
        try:
            self.peer = conn.getpeername()
        except OSError as err:
            # The client can hang up between accept() and here.
            self.close()
            if err.errno == errno.ENOTCONN:
                return
            raise
        self._one_send_per_reply = _disable_nagle(conn)
        _debug('Peer:', repr(self.peer))
        self.push('220 %s %s' % (self.fqdn, __version__))

    def _set_post_data_state(self):
        """Reset state variables to their post-DATA state."""
        self.set_terminator(b'\r\n')
        self.smtp_state = self.COMMAND
        self.num_bytes = 0
        self.mailfrom = None
        self.rcpttos = []
        self.require_SMTPUTF8 = False

    def _set_rset_state(self):
        """Reset all state variables except the greeting."""
        self._set_post_data_state()
        self.received_lines = []
        self.received_data = ''

    # The attribute names before Python 3.3, kept for old subclasses.
    __server = _DeprecatedAlias('smtp_server')
    __line = _DeprecatedAlias('received_lines')
    __state = _DeprecatedAlias('smtp_state')
    __greeting = _DeprecatedAlias('seen_greeting')
    __mailfrom = _DeprecatedAlias('mailfrom')
    __rcpttos = _DeprecatedAlias('rcpttos')
    __data = _DeprecatedAlias('received_data')
    __fqdn = _DeprecatedAlias('fqdn')
    __peer = _DeprecatedAlias('peer')
    __conn = _DeprecatedAlias('conn')
    __addr = _DeprecatedAlias('addr')

    def push(self, msg):
        """Send the reply line msg (a str without its CRLF) to the client."""
        encoding = 'utf-8' if self.require_SMTPUTF8 else 'ascii'
        data = (msg + '\r\n').encode(encoding)
        if self._pending_replies is not None:
            self._pending_replies.append(data)
        else:
            asynchat.async_chat.push(self, data)

    def _push_lines(self, lines):
        """push() each of lines, sending them together where that is safe.

        On TCP, every push is a send() of its own and, with Nagle off, a
        packet: one send for a whole multi-line reply costs less.  Elsewhere
        (a fake socket in a test looks at what each send carried) the lines
        go out one by one, as 3.11 sent them.
        """
        if not self._one_send_per_reply:
            for line in lines:
                self.push(line)
            return
        self._pending_replies = []
        try:
            for line in lines:
                self.push(line)
        finally:
            data, self._pending_replies = self._pending_replies, None
            asynchat.async_chat.push(self, b''.join(data))

    def _can_send(self, text):
        """Whether push() can encode text (it may echo what the client sent)."""
        return self.require_SMTPUTF8 or text.isascii()

    def collect_incoming_data(self, data):
        """Buffer data, a piece of the current command line or message."""
        if self.smtp_state == self.COMMAND:
            limit = self.max_command_size_limit
        elif self.smtp_state == self.DATA:
            limit = self.data_size_limit
        else:
            limit = None
        if limit:
            # Past the limit, count no more and keep nothing: the line or
            # message will be refused whole when its terminator arrives.
            if self.num_bytes > limit:
                return
            self.num_bytes += len(data)
        if self._decoder is not None:
            if self._undecodable:
                return
            try:
                data = self._decoder.decode(data)
            except UnicodeDecodeError:
                self._undecodable = True
                return
        elif self.smtp_state == self.DATA:
            # A message goes into one growing buffer, not a list of pieces to
            # join, so that a large one needs two copies of itself at the
            # peak, not three.
            pieces = self.received_lines
            if pieces and type(pieces[-1]) is bytearray:
                pieces[-1] += data
                return
            data = bytearray(data)
        self.received_lines.append(data)

    def _finish_line(self):
        """Join the buffered pieces of the line or message just ended.

        Returns None if they are not valid UTF-8 (only when decode_data is
        set; in 3.11 the decoding error dropped the connection).
        """
        line = self._emptystring.join(self.received_lines)
        self.received_lines = []
        undecodable, self._undecodable = self._undecodable, False
        if self._decoder is not None:
            try:
                self._decoder.decode(b'', final=True)
            except UnicodeDecodeError:
                undecodable = True
            self._decoder.reset()
        return None if undecodable else line

    def found_terminator(self):
        """Act on the command line or message that has just ended."""
        line = self._finish_line()
        if _debugging():
            _debug('Data:', repr(line))
        if self.smtp_state == self.COMMAND:
            self._process_command(line)
            return
        if self.smtp_state != self.DATA:
            self.push('451 Internal confusion')
            self.num_bytes = 0
            return
        if self.data_size_limit and self.num_bytes > self.data_size_limit:
            # Back to command state, as after any message; 3.11 stayed in
            # DATA and took the next commands for message text.
            self._set_post_data_state()
            self.push('552 Error: Too much mail data')
            return
        if line is None:
            self._set_post_data_state()
            self.push('554 Error: message data is not valid UTF-8')
            return
        # RFC 5321, section 4.5.2: the client doubled the dot at the start of
        # every line that began with one; take it away again.  Lines end in
        # a plain newline.  Each step replaces `line`, so that no more than
        # two copies of a large message are alive at a time.
        linesep = self._linesep
        dot = '.' if self._decode_data else b'.'
        line = line.replace(linesep + dot, linesep)
        if line[:1] == dot:
            line = line[1:]
        self.received_data = line.replace(linesep, self._newline)
        del line
        self._process_message()

    def _process_command(self, line):
        size, self.num_bytes = self.num_bytes, 0
        if line is not None and not self._decode_data:
            try:
                line = line and str(line, 'utf-8')
            except UnicodeDecodeError:
                line = None
        if line is None:
            # Not UTF-8.  A line cut short at the size limit can end inside a
            # character, and is then refused for its length, as it would be
            # had it been whole.
            if size > self.max_command_size_limit:
                self.push('500 Error: line too long')
            else:
                self.push('500 Error: bad syntax')
            return
        if not line:
            self.push('500 Error: bad syntax')
            return
        command, space, arg = line.partition(' ')
        command = command.upper()
        arg = arg.strip() if space else None
        if self.extended_smtp:
            max_size = self.command_size_limits[command]
        else:
            max_size = self.command_size_limit
        if size > max_size:
            self.push('500 Error: line too long')
            return
        method = getattr(self, 'smtp_' + command, None)
        if method:
            method(arg)
        elif self._can_send(command):
            self.push('500 Error: command "%s" not recognized' % command)
        else:
            self.push('500 Error: bad syntax')

    def _process_message(self):
        """Hand the message just received to the server; reply."""
        args = (self.peer, self.mailfrom, self.rcpttos, self.received_data)
        kwargs = {}
        if not self._decode_data:
            kwargs = {'mail_options': self.mail_options,
                      'rcpt_options': self.rcpt_options}
        status = self.smtp_server.process_message(*args, **kwargs)
        self._set_post_data_state()
        self.push(status if status else '250 OK')

    # SMTP and ESMTP commands

    def _greet(self, arg, command):
        """Accept a HELO or EHLO greeting; False if it was refused."""
        if not arg:
            self.push('501 Syntax: %s hostname' % command)
            return False
        # One greeting per session; see bpo-21783.
        if self.seen_greeting:
            self.push('503 Duplicate HELO/EHLO')
            return False
        self._set_rset_state()
        self.seen_greeting = arg
        return True

    def smtp_HELO(self, arg):
        if self._greet(arg, 'HELO'):
            self.push('250 %s' % self.fqdn)

    def smtp_EHLO(self, arg):
        if not self._greet(arg, 'EHLO'):
            return
        self.extended_smtp = True
        extensions = []
        if self.data_size_limit:
            extensions.append('SIZE %s' % self.data_size_limit)
            self.command_size_limits['MAIL'] += 26
        if not self._decode_data:
            extensions.append('8BITMIME')
        if self.enable_SMTPUTF8:
            extensions.append('SMTPUTF8')
            self.command_size_limits['MAIL'] += 10
        lines = ['250-%s' % line for line in [self.fqdn] + extensions]
        self._push_lines(lines + ['250 HELP'])

    def smtp_NOOP(self, arg):
        self.push('501 Syntax: NOOP' if arg else '250 OK')

    def smtp_QUIT(self, arg):
        # Any argument is ignored.
        self.push('221 Bye')
        self.close_when_done()

    def _strip_command_keyword(self, keyword, arg):
        """arg after keyword ('FROM:', 'TO:'), or '' if it doesn't start so."""
        size = len(keyword)
        if arg[:size].upper() != keyword:
            return ''
        return arg[size:].strip()

    def _getaddr(self, arg):
        """Split arg into (address, rest); the address is '' if there is none."""
        if not arg:
            return '', ''
        simple = _SIMPLE_PATH.match(arg)
        if simple:
            return simple[1], arg[simple.end():]
        parse = get_angle_addr if arg.lstrip().startswith('<') else get_addr_spec
        try:
            token, rest = parse(arg)
            if not token:
                # Kept from 3.11, but never true: both parsers return a
                # non-empty token list or raise.
                return token, rest  # pragma: no cover
            return token.addr_spec, rest
        except Exception:
            # The email package's private parser fails on some malformed
            # addresses with assorted exceptions (HeaderParseError,
            # IndexError, AttributeError, RecursionError, ...), which dropped
            # 3.11's connection.  For SMTP it is simply no address.
            return '', ''

    def _getparams(self, params):
        """Map ESMTP parameters (RFC 1869: keyword[=value]) to their values.

        A parameter without a value maps to True; returns None if any
        parameter is malformed.
        """
        result = {}
        for param in params:
            keyword, equals, value = param.partition('=')
            if not keyword.isalnum() or (equals and not value):
                return None
            result[keyword] = value if equals else True
        return result

    def _syntax(self, command):
        """The syntax of command as HELP states it in this session."""
        syntax = _COMMAND_SYNTAX[command]
        if self.extended_smtp and command in ('MAIL', 'RCPT'):
            syntax += _ESMTP_PARAMS
        return syntax

    def smtp_HELP(self, arg):
        if not arg:
            self.push('250 ' + _SUPPORTED_COMMANDS)
        elif arg.upper() in _COMMAND_SYNTAX:
            self.push('250 Syntax: ' + self._syntax(arg.upper()))
        else:
            self.push('501 ' + _SUPPORTED_COMMANDS)

    def smtp_VRFY(self, arg):
        if not arg:
            self.push('501 Syntax: VRFY <address>')
            return
        address, params = self._getaddr(arg)
        if address:
            self.push('252 Cannot VRFY user, but will accept message '
                      'and attempt delivery')
        elif self._can_send(arg):
            self.push('502 Could not VRFY %s' % arg)
        else:
            self.push('501 Syntax: VRFY <address>')

    def smtp_EXPN(self, arg):
        # Recognised, but not implemented.
        self.push('502 EXPN not implemented')

    def _parse_path(self, command, keyword, arg):
        """Parse the argument of MAIL or RCPT: (address, parameter list).

        The parameters are upper-cased and split at white space.

        Replies with the command's syntax error and returns None if arg is
        not a valid path, or has parameters outside an EHLO session.
        """
        if arg is not None:
            address, params = self._getaddr(
                self._strip_command_keyword(keyword, arg))
            if address and (self.extended_smtp or not params):
                return address, params.upper().split()
        self.push('501 Syntax: ' + self._syntax(command))
        return None

    def smtp_MAIL(self, arg):
        if not self.seen_greeting:
            self.push('503 Error: send HELO first')
            return
        _debug('===> MAIL', arg)
        path = self._parse_path('MAIL', 'FROM:', arg)
        if path is None:
            return
        address, options = path
        if self.mailfrom:
            self.push('503 Error: nested MAIL command')
            return
        self.mail_options = options
        params = self._getparams(options)
        if params is None:
            self.push('501 Syntax: ' + self._syntax('MAIL'))
            return
        if not self._decode_data:
            body = params.pop('BODY', '7BIT')
            if body not in ('7BIT', '8BITMIME'):
                self.push('501 Error: BODY can only be one of 7BIT, 8BITMIME')
                return
        if self.enable_SMTPUTF8:
            smtputf8 = params.pop('SMTPUTF8', False)
            if smtputf8 is not True and smtputf8 is not False:
                self.push('501 Error: SMTPUTF8 takes no arguments')
                return
            if smtputf8:
                self.require_SMTPUTF8 = True
        size = params.pop('SIZE', None)
        if size and self._size_too_big(size):
            return
        if params:
            self.push('555 MAIL FROM parameters not recognized or not '
                      'implemented')
            return
        self.mailfrom = address
        _debug('sender:', self.mailfrom)
        self.push('250 OK')

    def _size_too_big(self, size):
        """Check a MAIL SIZE=size parameter (RFC 1870); reply if it fails."""
        # 3.11 crashed on SIZE without a value (True here), and, with a size
        # limit, on digits int() can't read, such as superscripts: both are
        # just bad syntax.
        if size is True or not size.isdigit():
            self.push('501 Syntax: ' + self._syntax('MAIL'))
            return True
        if not self.data_size_limit:
            return False
        try:
            too_big = int(size) > self.data_size_limit
        except ValueError:
            self.push('501 Syntax: ' + self._syntax('MAIL'))
            return True
        if too_big:
            self.push('552 Error: message size exceeds fixed maximum '
                      'message size')
        return too_big

    def smtp_RCPT(self, arg):
        if not self.seen_greeting:
            self.push('503 Error: send HELO first')
            return
        _debug('===> RCPT', arg)
        if not self.mailfrom:
            self.push('503 Error: need MAIL command')
            return
        path = self._parse_path('RCPT', 'TO:', arg)
        if path is None:
            return
        address, options = path
        self.rcpt_options = options
        params = self._getparams(options)
        if params is None:
            self.push('501 Syntax: ' + self._syntax('RCPT'))
            return
        # No RCPT parameters are supported.
        if params:
            self.push('555 RCPT TO parameters not recognized or not '
                      'implemented')
            return
        self.rcpttos.append(address)
        _debug('recips:', self.rcpttos)
        self.push('250 OK')

    def smtp_RSET(self, arg):
        if not arg:
            self._set_rset_state()
        self.push('501 Syntax: RSET' if arg else '250 OK')

    def smtp_DATA(self, arg):
        if not self.seen_greeting:
            self.push('503 Error: send HELO first')
        elif not self.rcpttos:
            self.push('503 Error: need RCPT command')
        elif arg:
            self.push('501 Syntax: DATA')
        else:
            self.set_terminator(b'\r\n.\r\n')
            self.smtp_state = self.DATA
            self.push('354 End data with <CR><LF>.<CR><LF>')


class SMTPServer(asyncore.dispatcher):
    """Listen on localaddr and run an SMTP session for every client.

    Subclasses override process_message() to do something with each message.
    remoteaddr is kept for subclasses that pass mail on (PureProxy).
    """

    # The SMTPChannel class that runs each client's session.
    channel_class = SMTPChannel

    def __init__(self, localaddr, remoteaddr,
                 data_size_limit=DATA_SIZE_DEFAULT, map=None,
                 enable_SMTPUTF8=False, decode_data=False):
        _check_options(enable_SMTPUTF8, decode_data)
        self._localaddr, self._remoteaddr = localaddr, remoteaddr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self._accept_paused_until = 0.0
        asyncore.dispatcher.__init__(self, map=map)
        try:
            family, kind = socket.getaddrinfo(*localaddr,
                                              type=socket.SOCK_STREAM)[0][:2]
            self.create_socket(family, kind)
            # Allow a restarted server to bind while old connections linger.
            self.set_reuse_addr()
            self.bind(localaddr)
            self.listen(_LISTEN_BACKLOG)
        except BaseException:
            self.close()
            raise
        _debug('%s started at %s\n\tLocal addr: %s\n\tRemote addr:%s' % (
            self.__class__.__name__, time.ctime(time.time()),
            localaddr, remoteaddr))

    def readable(self):
        # While accepting is paused the listening socket is not watched;
        # otherwise its pending clients would wake the loop without end.
        return time.monotonic() >= self._accept_paused_until

    def handle_accept(self):
        # A pass of the event loop costs time in proportion to the number of
        # connections.  With many, take every waiting client (up to a batch)
        # rather than one per pass, so that a burst is served quickly; with
        # few, the extra accept() that finds the queue empty costs more than
        # it saves.
        batch = _ACCEPT_BATCH if len(self._map) > _ACCEPT_BATCH else 1
        for _ in range(batch):
            try:
                pair = self.accept()
            except OSError as err:
                if err.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                # Out of descriptors: the clients wait in the listen queue
                # until some are freed.  (3.11 closed the listening socket.)
                _debug('Cannot accept now:', err)
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                return
            if pair is None:
                return
            self.handle_accepted(*pair)

    def handle_accepted(self, conn, addr):
        _debug('Incoming connection from', repr(addr))
        self.channel_class(self, conn, addr, self.data_size_limit, self._map,
                           self.enable_SMTPUTF8, self._decode_data)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        """Handle one message; subclasses must override this.

        peer is the client's address, (host, port).  mailfrom is the sender's
        address and rcpttos the list of recipients' addresses, as the client
        gave them.  data is the message, headers and body: bytes, or str if
        the server was made with decode_data=True, with lines ending in \\n and
        the dots the client added at line starts (RFC 5321, 4.5.2) removed.

        Unless decode_data=True, kwargs has 'mail_options' and 'rcpt_options':
        the parameters of the MAIL and the last RCPT command, as upper-case
        strings, e.g. ['BODY=8BITMIME', 'SMTPUTF8'].

        Return None to reply '250 OK', or a reply line such as
        '554 Rejected' to send that instead.
        """
        raise NotImplementedError


class DebuggingServer(SMTPServer):
    """Print every message on stdout instead of delivering it."""

    def _print_message_content(self, peer, data):
        is_text = isinstance(data, str)
        in_headers = True
        for line in data.splitlines():
            if in_headers and not line:
                # The first empty line ends the headers: show the sender's
                # address there, as a relay would add it.
                peer_header = 'X-Peer: ' + peer[0]
                if not is_text:
                    peer_header = repr(peer_header.encode('utf-8'))
                print(peer_header)
                in_headers = False
            print(line if is_text else repr(line))

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        print('---------- MESSAGE FOLLOWS ----------')
        mail_options = kwargs.get('mail_options')
        rcpt_options = kwargs.get('rcpt_options')
        if mail_options:
            print('mail options: %s' % (mail_options,))
        if rcpt_options:
            print('rcpt options: %s\n' % (rcpt_options,))
        self._print_message_content(peer, data)
        # Flushed so that a pipe or log file shows each message at once.
        print('------------ END MESSAGE ------------', flush=True)


def _insert_peer_header(data, host):
    """data (bytes or str) with an X-Peer header after its last header line.

    That is before the first empty line, or at the end if there is none.
    """
    if isinstance(data, str):
        newline, header = '\n', 'X-Peer: %s\n' % host
    else:
        newline, header = b'\n', b'X-Peer: %s\n' % host.encode('ascii')
    if not data or data[:1] == newline:
        end = 0
    else:
        end = data.find(newline * 2) + 1
        if end == 0:
            if data[-1:] != newline:
                return data + newline + header[:-1]
            end = len(data)
    return data[:end] + header + data[end:]


class PureProxy(SMTPServer):
    """Relay every message to the SMTP server at remoteaddr.

    The relay is a blocking smtplib conversation: while it lasts (at most
    relay_timeout seconds a step) no other client is served.
    """

    # Seconds to wait for each step of the upstream conversation.
    relay_timeout = 30.0

    def __init__(self, *args, **kwargs):
        if kwargs.get('enable_SMTPUTF8'):
            raise ValueError("PureProxy does not support SMTPUTF8.")
        super().__init__(*args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        data = _insert_peer_header(data, peer[0])
        if isinstance(data, str):
            # decode_data=True: 3.11 handed smtplib the str, which made every
            # CR, LF and CRLF a CRLF and encoded it in ASCII.  The same, but
            # in UTF-8, so that 8-bit text gets through as well.
            data = _re.sub(r'\r\n|\r|\n', '\r\n', data).encode('utf-8')
        else:
            # Back to the line ends the client sent.  smtplib ends the data
            # with CRLF . CRLF and counts a final CRLF of the message as part
            # of that, so a message that ends in one needs it twice.
            data = data.replace(b'\n', b'\r\n')
            if data.endswith(b'\r\n'):
                data += b'\r\n'
        refused = self._deliver(mailfrom, rcpttos, data)
        _debug('we got some refusals:', refused)
        if rcpttos and all(rcpt in refused for rcpt in rcpttos):
            # Nobody got the message: say so, so that the client keeps it.
            return _refusal_reply(refused.values())
        return None

    def _deliver(self, mailfrom, rcpttos, data):
        """Send data upstream; return {recipient: (code, text)} of refusals.

        data goes to smtplib's sendmail() as it is.
        """
        import smtplib
        refused = {}
        try:
            upstream = smtplib.SMTP(timeout=self.relay_timeout)
            try:
                code, text = upstream.connect(self._remoteaddr[0],
                                              self._remoteaddr[1])
                if code != 220:
                    # RFC 5321, 3.1: a server that will take no mail says so
                    # in its greeting.
                    raise smtplib.SMTPConnectError(code, text)
                upstream.ehlo_or_helo_if_needed()
                options = []
                if not data.isascii() and upstream.has_extn('8bitmime'):
                    options.append('BODY=8BITMIME')
                refused = upstream.sendmail(mailfrom, rcpttos, data, options)
            except BaseException as e:
                # After a refusal the connection is still good: say goodbye,
                # as 3.11 did.  After a network error or a timeout, hang up.
                lost = isinstance(e, OSError) and (
                    not isinstance(e, smtplib.SMTPException)
                    or isinstance(e, smtplib.SMTPServerDisconnected))
                if lost:
                    upstream.close()
                else:
                    _quit(upstream)
                raise
            # The message is delivered; a lost goodbye changes nothing.
            _quit(upstream)
        except smtplib.SMTPRecipientsRefused as e:
            _debug('got SMTPRecipientsRefused')
            refused = e.recipients
        except (OSError, smtplib.SMTPException) as e:
            _debug('got', e.__class__)
            # Every recipient was refused: with the upstream's code and text if
            # it gave them, else with a code no SMTP reply has.
            errcode = getattr(e, 'smtp_code', -1)
            errmsg = getattr(e, 'smtp_error', 'ignore')
            refused = {rcpt: (errcode, errmsg) for rcpt in rcpttos}
        except UnicodeEncodeError:
            # smtplib sends addresses in ASCII only (no SMTPUTF8 here); 3.11
            # let this out and dropped the client's connection.
            _debug('got', UnicodeEncodeError)
            refused = {rcpt: (553, 'Error: only ASCII addresses can be relayed')
                       for rcpt in rcpttos}
        return refused


def _quit(connection):
    """Close an smtplib connection with QUIT, ignoring any failure."""
    try:
        connection.quit()
    except OSError:
        connection.close()


def _refusal_reply(refusals):
    """The reply for a message every upstream recipient refused.

    The upstream's own reply, a temporary one if there is any, so the client
    retries; 451 if the upstream gave no reply (down, timed out).
    """
    replies = [(code, text) for code, text in refusals
               if isinstance(code, int) and 400 <= code < 600]
    replies.sort(key=lambda reply: reply[0] >= 500)
    if not replies:
        return '451 Requested action aborted: upstream server unavailable'
    code, text = replies[0]
    if isinstance(text, bytes):
        text = text.decode('ascii', 'backslashreplace')
    return '%d %s' % (code, ' '.join(text.split()))


class Options:
    """The command line's settings, as parseargs() returns them."""
    setuid = True
    classname = 'PureProxy'
    # No limit unless -s gives one, as in 3.11, whatever the usage text says:
    # with a limit the server offers SIZE, clients send SIZE=n with MAIL, and
    # DebuggingServer prints a "mail options:" line 3.11 never printed.
    size_limit = None
    enable_SMTPUTF8 = False


def _split_address(spec, which):
    """Split a 'host:port' command line argument, or exit with usage."""
    host, colon, port = spec.partition(':')
    if not colon:
        usage(1, 'Bad %s spec: %s' % (which, spec))
    try:
        return host, int(port)
    except ValueError:
        usage(1, 'Bad %s port: %s' % (which, spec))


_LONG_OPTIONS = ['class=', 'nosetuid', 'version', 'help', 'size=', 'debug',
                 'smtputf8']
# The short option for each long one.
_SHORT_OPTIONS = {'--nosetuid': '-n', '--version': '-V', '--help': '-h',
                  '--class': '-c', '--size': '-s', '--debug': '-d',
                  '--smtputf8': '-u'}


def parseargs():
    """Parse sys.argv into an Options instance, or exit with usage."""
    global DEBUGSTREAM
    try:
        opts, args = getopt.getopt(sys.argv[1:], 'nVhc:s:du', _LONG_OPTIONS)
    except getopt.GetoptError as e:
        usage(1, e)

    options = Options()
    for opt, arg in opts:
        opt = _SHORT_OPTIONS.get(opt, opt)
        if opt == '-h':
            usage(0)
        elif opt == '-V':
            print(__version__)
            sys.exit(0)
        elif opt == '-n':
            options.setuid = False
        elif opt == '-c':
            options.classname = arg
        elif opt == '-d':
            DEBUGSTREAM = sys.stderr
        elif opt == '-u':
            options.enable_SMTPUTF8 = True
        else:
            # -s: getopt gives back no option it wasn't given.
            try:
                options.size_limit = int(arg)
            except ValueError:
                print('Invalid size: ' + arg, file=sys.stderr)
                sys.exit(1)

    if len(args) > 2:
        usage(1, 'Invalid arguments: %s' % COMMASPACE.join(args))
    localspec = args[0] if args else 'localhost:8025'
    remotespec = args[1] if len(args) > 1 else 'localhost:25'
    options.localhost, options.localport = _split_address(localspec, 'local')
    options.remotehost, options.remoteport = _split_address(remotespec,
                                                            'remote')
    return options


def _become_nobody():
    """setuid to the user nobody, or exit with status 1."""
    try:
        import pwd
    except ImportError:
        print('Cannot import module "pwd"; try running with -n option.',
              file=sys.stderr)
        sys.exit(1)
    try:
        os.setuid(pwd.getpwnam('nobody').pw_uid)
    except PermissionError:
        print('Cannot setuid "nobody"; try running with -n option.',
              file=sys.stderr)
        sys.exit(1)


def _main():
    options = parseargs()
    classname = options.classname
    if '.' in classname:
        modname, _, classname = classname.rpartition('.')
        __import__(modname)
        module = sys.modules[modname]
    else:
        import __main__ as module
    server_class = getattr(module, classname)
    server_class((options.localhost, options.localport),
                 (options.remotehost, options.remoteport),
                 options.size_limit, enable_SMTPUTF8=options.enable_SMTPUTF8)
    if options.setuid:
        _become_nobody()
    try:
        # poll(), unlike select(), serves descriptors past 1024.  The short
        # timeout lets a server that paused accepting look again soon.
        asyncore.loop(timeout=1.0, use_poll=True)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    _main()
