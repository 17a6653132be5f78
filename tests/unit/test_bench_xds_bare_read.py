"""The baseline of the ITI-41 parsing ratio (benchmarks/bench_xds.py, issue 6) reads the
same envelope and parts as the real parser, so that the ratio compares like with like."""

from __future__ import annotations

import pytest
from lxml import etree

from benchmarks.bench_xds import _bare_read, _mime_parts
from ihe_xds.mtom import parse_http_body
from tests.xds_builders import build_iti41


@pytest.mark.parametrize("documents", [[b"%PDF-1.4\n" + bytes(range(256)) * 40], [b"a", b"bc"]])
def test_bare_mtom_read_finds_the_parts_the_parser_finds(documents):
    request = build_iti41(documents=documents)
    package = parse_http_body(request.content_type, request.body)
    boundary = request.content_type.split('boundary="')[1].split('"')[0]
    parts = _mime_parts(request.body, b"\r\n--" + boundary.encode())
    assert parts == [package.envelope, *(a.data for a in package.attachments.values())]
    root = _bare_read(request.content_type, request.body)()
    assert etree.tostring(root) == etree.tostring(etree.fromstring(package.envelope))


def test_bare_inline_read_is_the_lxml_parse_of_the_body():
    request = build_iti41(mtom=False)
    root = _bare_read("application/soap+xml; charset=UTF-8", request.body)()
    assert etree.tostring(root) == etree.tostring(etree.fromstring(request.body))


def test_bare_read_refuses_a_body_it_would_misread():
    request = build_iti41()
    # LF-only delimiters: parse_http_body reads them, the CRLF-only baseline would not.
    body = request.body.replace(b"\r\n", b"\n")
    with pytest.raises(ValueError):
        _bare_read(request.content_type, body)
