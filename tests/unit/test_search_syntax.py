"""The search syntax: parsed once, rendered so that no input can become engine syntax."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import InvalidInput
from app.domain.search import SearchQuery, Term, parse, phrases, to_fts5


def test_words_phrases_exclusions_and_or() -> None:
    query = parse('Root "time zone" -draft cats or dogs -"old news"')
    assert query == SearchQuery(
        clauses=(
            (Term(("root",)),),
            (Term(("time", "zone")),),
            (Term(("cats",)), Term(("dogs",))),
        ),
        excluded=(Term(("draft",), True), Term(("old", "news"), True)),
    )
    assert to_fts5(query) == (
        '((("root") AND ("time zone") AND ("cats" OR "dogs")) NOT "draft") NOT "old news"'
    )
    assert phrases(query) == ["root", "time zone", "cats", "dogs", "draft", "old news"]


def test_punctuation_splits_words_like_the_engines_tokenizers() -> None:
    assert parse("e-mail's").clauses == ((Term(("e", "mail", "s")),),)
    assert parse("naïve café").clauses == ((Term(("naïve",)),), (Term(("café",)),))


def test_a_leading_or_and_a_dangling_or_are_words_of_no_consequence() -> None:
    assert parse("or cats or").clauses == ((Term(("cats",)),),)


@pytest.mark.parametrize("q", ["", "   ", "-x", '-"a b"', "?!", "or", "x" * 501])
def test_nothing_to_search_for_is_invalid_input_naming_q(q: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(q)
    assert caught.value.field == "q"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_refused_cleanly_or_renders_an_expression_fts5_accepts(q: str) -> None:
    try:
        query = parse(q)
    except InvalidInput as exc:
        field = exc.field
    else:
        field = None
    if field is not None:
        assert field == "q"
        return
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    conn.execute("INSERT INTO t (body) VALUES (?)", (q,))
    conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (to_fts5(query),)).fetchone()
