"""The next page of an upstream tag list, read from its Link header (httpx parses the header)."""

from __future__ import annotations

import httpx
import pytest

from infra.upstream.headers import next_link


def answer(link: str | None) -> httpx.Response:
    return httpx.Response(200, headers={} if link is None else {"Link": link})


def test_the_next_page_is_the_link_whose_relation_is_next():
    assert next_link(answer('</v2/a/tags/list?n=2&last=b>; rel="next"')) == "/v2/a/tags/list?n=2&last=b"
    assert next_link(answer('</v2/a/tags/list?n=2>; rel="prev", </v2/a/tags/list?n=2&last=d>; rel="next"')) \
        == "/v2/a/tags/list?n=2&last=d"


def test_the_relation_is_matched_whatever_its_case_or_quoting():
    assert next_link(answer("</v2/a/tags/list?last=b>; rel=Next")) == "/v2/a/tags/list?last=b"


@pytest.mark.parametrize("link", [None, "", "garbage", '</v2/a/tags/list?n=2>; rel="prev"', '<>; rel="next"'])
def test_without_a_usable_next_link_the_list_ends(link):
    assert next_link(answer(link)) is None
