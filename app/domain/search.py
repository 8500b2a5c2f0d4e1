"""Full-text search queries: one small syntax, parsed once, rendered for each engine.

The syntax is the familiar web-search one: words must all appear (`ingest queue`), a quoted
phrase must appear as written (`"example domain"`), a leading minus excludes (`-draft`), and `or`
between two terms accepts either (`cat or dog`). Stemming is English on both engines, so
`ingesting` finds `ingested`. Everything else a user types is text, never syntax: the query is
rendered as bound parameters (PostgreSQL) or quoted strings (SQLite FTS5), so no input can
inject operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.domain.errors import InvalidInput

MAX_QUERY_CHARS = 500
MAX_TERMS = 32

#: Word characters as both engines' tokenizers see them (letters and digits of any script).
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear next to each other (one word is a one-word phrase)."""

    words: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Clauses joined by AND; the terms within a clause are alternatives (OR)."""

    clauses: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.lower() for word in _WORD.findall(text))


def parse(text: str) -> SearchQuery:
    """Parse a query; raises `InvalidInput` (field `q`) if nothing in it can be searched for."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(f"q: at most {MAX_QUERY_CHARS} characters", field="q")
    clauses: list[list[Term]] = []
    excluded: list[Term] = []
    pending_or = False
    for match in _TOKEN.finditer(text):
        minus, phrase, bare = match.groups()
        if bare is not None and bare.lower() == "or":
            pending_or = bool(clauses)
            continue
        negated = bool(minus) or (bare is not None and bare.startswith("-") and len(bare) > 1)
        words = _words(phrase if phrase is not None else bare)
        if not words:
            continue
        term = Term(words, negated)
        if negated:
            excluded.append(term)
        elif pending_or:
            clauses[-1].append(term)
        else:
            clauses.append([term])
        pending_or = False
    if not clauses:
        raise InvalidInput(
            "q: give at least one word to search for (not only excluded ones)", field="q"
        )
    if sum(map(len, clauses)) + len(excluded) > MAX_TERMS:
        raise InvalidInput(f"q: at most {MAX_TERMS} words or phrases", field="q")
    return SearchQuery(tuple(tuple(c) for c in clauses), tuple(excluded))


def _fts5_phrase(term: Term) -> str:
    # Words hold only letters and digits, so the quotes cannot be broken out of.
    return '"' + " ".join(term.words) + '"'


def to_fts5(query: SearchQuery) -> str:
    """The query as an FTS5 MATCH expression."""
    clauses = ["(" + " OR ".join(_fts5_phrase(t) for t in clause) + ")" for clause in query.clauses]
    expression = " AND ".join(clauses)
    for term in query.excluded:
        expression = f"({expression}) NOT {_fts5_phrase(term)}"
    return expression


def phrases(query: SearchQuery) -> list[str]:
    """Every term's text, in order: clauses first, then exclusions (PostgreSQL binds these)."""
    return [" ".join(t.words) for clause in query.clauses for t in clause] + [
        " ".join(t.words) for t in query.excluded
    ]
