"""The fast path of SMTPChannel._getaddr() gives what the email parser gives.

3.11 parses every MAIL and RCPT address with the email package's header
parser.  pysmtpd reads the common <local@domain> shape with a regular
expression instead (smtpd._SIMPLE_PATH), which is only allowed if the result
is identical, address and remainder, for every input.  These property tests
generate addresses of every shape, the odd ones included (quoting, comments,
source routes, trailing text, white space of all kinds, non-ASCII), and
compare the two.
"""

import string
from email._header_value_parser import get_addr_spec, get_angle_addr

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings, strategies as st  # noqa: E402

import smtpd  # noqa: E402

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
ODD = ' \t\n\r\x0b\xa0"\\()<>[]@,;:.é\x00'

atoms = st.text(ATEXT + ".", min_size=0, max_size=8)
odd_atoms = st.text(ATEXT + ODD, min_size=0, max_size=8)
labels = st.text(string.ascii_letters + string.digits + "-.", max_size=8)
locals_ = st.one_of(atoms, odd_atoms, atoms.map(lambda s: '"%s"' % s))
domains = st.one_of(labels, atoms, odd_atoms,
                    labels.map(lambda s: "[%s]" % s))
routes = st.one_of(st.just(""), labels.map(lambda d: "@%s:" % d),
                   st.tuples(labels, labels).map(lambda p: "@%s,@%s:" % p))
suffixes = st.one_of(
    st.just(""),
    st.sampled_from([" SIZE=1000", "  BODY=8BITMIME", " (comment) X",
                     "\tX", "\nX", " \nX", "\x0bX", "\xa0X", " ", "x",
                     " ( SIZE=1", " (c)", " éX", " _X"]),
    st.text(" \t(" + ATEXT, max_size=6))


@st.composite
def paths(draw):
    local, domain = draw(locals_), draw(domains)
    body = draw(routes) + local + "@" + domain
    if draw(st.booleans()):
        body = "<" + body + draw(st.sampled_from([">", ">", "", ">>"]))
    return draw(st.sampled_from(["", " "])) + body + draw(suffixes)


@st.composite
def near_simple_paths(draw):
    """<local@domain> of plain dot-atoms, sometimes with one odd character."""
    word = st.text(ATEXT, min_size=1, max_size=6)
    local = ".".join(draw(st.lists(word, min_size=1, max_size=3)))
    label = st.text(string.ascii_letters + string.digits + "-", min_size=1,
                    max_size=6)
    domain = ".".join(draw(st.lists(label, min_size=1, max_size=3)))
    arg = "<%s@%s>" % (local, domain) + draw(suffixes)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(arg)))
        arg = arg[:at] + draw(st.sampled_from(ODD)) + arg[at:]
    return arg


def parse_as_311(arg):
    """What 3.11's _getaddr returned (None where 3.11 raised)."""
    parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
    try:
        token, rest = parse(arg)
        return (token.addr_spec if token else token), rest
    except Exception:
        return None


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(st.one_of(paths(), near_simple_paths()))
@example("<user@example.com>")
@example("<user@example.com> SIZE=100 BODY=8BITMIME")
@example("<first.last+tag@mail.example-domain.org>")
@example("<a@b.c>\n")
@example("<a@b.c> (x)")
@example("<a@b..c>")
@example("<.a@b.c>")
@example("<a.@b.c>")
@example("<a@b.c.>")
@example("<a@-b.c>")
def test_fast_path_agrees_with_the_email_parser(arg):
    fast = smtpd._SIMPLE_PATH.match(arg)
    expected = parse_as_311(arg)
    got = smtpd.SMTPChannel._getaddr(None, arg)
    if fast:
        # The fast path may only claim what the parser reads without fault.
        assert expected is not None, arg
    if expected is None:
        # 3.11 raised here; pysmtpd reports "no address" instead.
        assert got == ("", "")
    else:
        assert got == expected


def test_fast_path_is_taken_for_the_common_shapes():
    # Guard against a regular expression that never matches, which would make
    # the agreement test above pass without testing the fast path at all.
    for arg in ["<user@example.com>", "<a.b+c@d-e.f.g> SIZE=12",
                "<x@localhost>"]:
        assert smtpd._SIMPLE_PATH.match(arg), arg
