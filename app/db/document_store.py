"""Documents produced by ingestion, keyed by the version they come from, and their search."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    func,
    literal_column,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from app.db.tables import documents
from app.domain.documents import (
    Document,
    DocumentWrite,
    SearchHit,
    StoredDocument,
    document_id,
)
from app.domain.errors import Contention
from app.domain.search import SearchQuery, Term, to_fts5

__all__ = ["DocumentStore", "document_id"]

#: Both engines index the title and this much of the text (a tsvector is capped at 1 MB).
SEARCH_TEXT_CHARS = 100_000
_SNIPPET_WORDS = 24
_ENGLISH: ColumnElement[Any] = literal_column("'english'::regconfig")
_META = [c for c in documents.c if c.name != "text"]


def _document(row: Row[Any], *, with_text: bool = True) -> Document:
    m = row._mapping
    return Document(
        id=m["id"],
        reference_id=m["reference_id"],
        payload_hash=m["payload_hash"],
        source=m["source"],
        url=m["url"],
        fetched_at=m["fetched_at"],
        content_type=m["content_type"],
        kind=m["kind"],
        text=m["text"] if with_text else "",
        title=m["title"],
        language=m["language"],
        canonical_url=m["canonical_url"],
        published=m["published"],
    )


class DocumentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    # -- writing ----------------------------------------------------------------------------------

    def write(self, doc: Document, now: datetime) -> DocumentWrite:
        """Write the document of a version: once per version, whatever the number of runs.

        A rerun rewrites the extracted fields and `updated_at` only. A new version becomes the
        reference's current document if it was fetched no earlier than the current one (which it
        then supersedes); an older version arriving late is stored already superseded. Two
        versions of one reference racing to be current: the loser raises `Contention`, and
        `Database.run` retries its transaction, which then sees the winner.
        """
        d = documents.c
        extracted = {
            "content_type": doc.content_type,
            "kind": doc.kind,
            "text": doc.text,
            "title": doc.title,
            "language": doc.language,
            "canonical_url": doc.canonical_url,
            "published": doc.published,
            "updated_at": now,
        }
        existing = self.conn.execute(
            self._locked(select(d.superseded_at).where(d.id == doc.id))
        ).first()
        if existing is not None:
            self.conn.execute(update(documents).where(d.id == doc.id).values(**extracted))
            return DocumentWrite(doc.id, "updated", existing.superseded_at is None, None)
        current = self.conn.execute(
            self._locked(
                select(d.id, d.fetched_at).where(
                    d.reference_id == doc.reference_id, d.superseded_at.is_(None)
                )
            )
        ).first()
        newest = current is None or doc.fetched_at >= current.fetched_at
        try:
            if current is not None and newest:
                self.conn.execute(
                    update(documents)
                    .where(d.id == current.id)
                    .values(superseded_at=now, superseded_by=doc.id)
                )
            self.conn.execute(
                documents.insert().values(
                    id=doc.id,
                    reference_id=doc.reference_id,
                    payload_hash=doc.payload_hash,
                    source=doc.source,
                    url=doc.url,
                    fetched_at=doc.fetched_at,
                    created_at=now,
                    superseded_at=None if newest else now,
                    superseded_by=None if newest or current is None else current.id,
                    **extracted,
                )
            )
        except IntegrityError as exc:
            raise Contention("another version of this reference was written at once") from exc
        return DocumentWrite(
            doc.id, "created", newest, current.id if current is not None and newest else None
        )

    def _locked(self, stmt: Any) -> Any:
        return stmt.with_for_update() if self.postgres else stmt

    # -- reading ----------------------------------------------------------------------------------

    def count(self, *, current_only: bool = False) -> int:
        stmt = select(func.count()).select_from(documents)
        if current_only:
            stmt = stmt.where(documents.c.superseded_at.is_(None))
        return int(self.conn.execute(stmt).scalar_one())

    def get(self, doc_id: str) -> StoredDocument | None:
        row = self.conn.execute(select(documents).where(documents.c.id == doc_id)).first()
        return None if row is None else self._stored(row)

    def current_of(self, reference_id: str) -> StoredDocument | None:
        d = documents.c
        row = self.conn.execute(
            select(documents).where(d.reference_id == reference_id, d.superseded_at.is_(None))
        ).first()
        return None if row is None else self._stored(row)

    def get_text(self, reference_id: str, payload_hash: str) -> str | None:
        row = self.conn.execute(
            select(documents.c.text).where(
                documents.c.id == document_id(reference_id, payload_hash)
            )
        ).first()
        return None if row is None else str(row.text)

    @staticmethod
    def _stored(row: Row[Any]) -> StoredDocument:
        m = row._mapping
        return StoredDocument(
            document=_document(row),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            superseded_at=m["superseded_at"],
            superseded_by=m["superseded_by"],
        )

    # -- search -----------------------------------------------------------------------------------

    def search(
        self, query: SearchQuery, *, limit: int, offset: int = 0, include_superseded: bool = False
    ) -> list[SearchHit]:
        """Documents matching `query`, best first (ties by id, so pages are stable)."""
        if self.postgres:
            return self._search_postgres(query, limit, offset, include_superseded)
        return self._search_sqlite(query, limit, offset, include_superseded)

    def _search_postgres(
        self, query: SearchQuery, limit: int, offset: int, include_superseded: bool
    ) -> list[SearchHit]:
        d = documents.c
        vector: ColumnElement[Any] = literal_column("documents.search_vector")

        def tsquery(term: Term) -> ColumnElement[Any]:
            return func.phraseto_tsquery(_ENGLISH, " ".join(term.words))

        wanted: ColumnElement[Any] | None = None
        for clause in query.clauses:
            either = tsquery(clause[0])
            for term in clause[1:]:
                either = either.op("||")(tsquery(term))
            wanted = either if wanted is None else wanted.op("&&")(either)
        assert wanted is not None  # parse() guarantees a clause
        conditions = [vector.op("@@")(wanted)]
        conditions += [not_(vector.op("@@")(tsquery(t))) for t in query.excluded]
        if not include_superseded:
            conditions.append(d.superseded_at.is_(None))
        rank = func.ts_rank_cd(vector, wanted).label("score")
        page = (
            select(d.seq, rank)
            .where(and_(*conditions))
            .order_by(rank.desc(), d.id)
            .limit(limit)
            .offset(offset)
            .subquery()
        )
        # The headline is costly: compute it for the page only, not for every match.
        headline = func.ts_headline(
            _ENGLISH,
            func.left(d.text, SEARCH_TEXT_CHARS),
            wanted,
            f"MaxWords={_SNIPPET_WORDS}, MinWords=8, MaxFragments=2, "
            "StartSel=«, StopSel=», FragmentDelimiter=' … '",
        ).label("snippet")
        rows = self.conn.execute(
            select(*_META, func.length(d.text).label("text_length"), page.c.score, headline)
            .join_from(documents, page, page.c.seq == d.seq)
            .order_by(page.c.score.desc(), d.id)
        )
        return [self._hit(row) for row in rows]

    def _search_sqlite(
        self, query: SearchQuery, limit: int, offset: int, include_superseded: bool
    ) -> list[SearchHit]:
        current = "" if include_superseded else "AND d.superseded_at IS NULL"
        columns = ", ".join(f"d.{c.name}" for c in _META)
        rows = self.conn.execute(
            text(
                f"SELECT {columns}, length(d.text) AS text_length, "
                "-bm25(documents_fts, 4.0, 1.0) AS score, "
                f"snippet(documents_fts, 1, '«', '»', ' … ', {_SNIPPET_WORDS}) AS snippet "
                "FROM documents_fts JOIN documents d ON d.seq = documents_fts.rowid "
                f"WHERE documents_fts MATCH :match {current} "
                "ORDER BY score DESC, d.id LIMIT :limit OFFSET :offset"
            ).columns(*_META),
            {"match": to_fts5(query), "limit": limit, "offset": offset},
        )
        return [self._hit(row) for row in rows]

    @staticmethod
    def _hit(row: Any) -> SearchHit:
        m = row._mapping
        return SearchHit(
            document=_document(row, with_text=False),
            text_length=int(m["text_length"]),
            current=m["superseded_at"] is None,
            score=float(m["score"]),
            snippet=str(m["snippet"] or ""),
        )
