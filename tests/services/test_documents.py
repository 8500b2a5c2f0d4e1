"""The document store on both engines: one document per version whatever the reruns, the
newest version current, and full-text search over title and text."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.documents import Document, document_id
from app.domain.errors import InvalidInput
from app.ingest.sinks import DocumentStoreSink
from app.services import documents
from tests.support import at


def doc(
    reference_id: str,
    payload_hash: str,
    text: str,
    *,
    fetched: float = 0,
    title: str | None = None,
) -> Document:
    return Document(
        id=document_id(reference_id, payload_hash),
        reference_id=reference_id,
        payload_hash=payload_hash,
        source="shop",
        url=f"https://example.com/{reference_id}",
        fetched_at=at(fetched),
        content_type="text/html",
        kind="html",
        text=text,
        title=title,
        language="en",
        canonical_url=None,
        published="2026-02-01",
    )


def search(db: Database, q: str, **kwargs: object) -> list[str]:
    """The reference ids found, best first."""
    page = db.run(lambda uow: documents.search(uow, q, **kwargs), write=False)  # type: ignore[arg-type]
    return [hit.document.reference_id for hit in page.results]


@pytest.fixture
def sink(db: Database, clock: FakeClock) -> DocumentStoreSink:
    return DocumentStoreSink(db, clock)


def test_a_rerun_rewrites_the_same_document_instead_of_adding_one(
    db: Database, clock: FakeClock, sink: DocumentStoreSink
) -> None:
    first = sink.write(doc("r1", "h1", "old extraction"))
    clock.advance(5)
    again = sink.write(doc("r1", "h1", "new extraction", title="T"))
    assert (first.outcome, again.outcome) == ("created", "updated")
    assert first.id == again.id == document_id("r1", "h1")
    assert db.run(lambda uow: uow.documents.count(), write=False) == 1
    stored = db.run(lambda uow: uow.documents.get(first.id), write=False)
    assert stored is not None
    assert (stored.document.text, stored.document.title) == ("new extraction", "T")
    assert stored.updated_at > stored.created_at
    assert stored.current


def test_a_newer_version_supersedes_the_current_document(
    db: Database, sink: DocumentStoreSink
) -> None:
    sink.write(doc("r1", "h1", "first version", fetched=0))
    write = sink.write(doc("r1", "h2", "second version", fetched=10))
    assert write.current
    assert write.superseded == document_id("r1", "h1")
    old = db.run(lambda uow: uow.documents.get(document_id("r1", "h1")), write=False)
    assert old is not None
    assert not old.current
    assert old.superseded_by == document_id("r1", "h2")
    current = db.run(lambda uow: uow.documents.current_of("r1"), write=False)
    assert current is not None
    assert current.document.payload_hash == "h2"
    assert db.run(lambda uow: uow.documents.count(current_only=True), write=False) == 1


def test_an_older_version_arriving_late_is_stored_superseded(
    db: Database, sink: DocumentStoreSink
) -> None:
    sink.write(doc("r1", "new", "newer text", fetched=10))
    late = sink.write(doc("r1", "old", "older text", fetched=0))
    assert (late.outcome, late.current, late.superseded) == ("created", False, None)
    current = db.run(lambda uow: uow.documents.current_of("r1"), write=False)
    assert current is not None
    assert current.document.payload_hash == "new"
    stored = db.run(lambda uow: uow.documents.get(late.id), write=False)
    assert stored is not None
    assert stored.superseded_by == current.document.id


def test_rerunning_a_superseded_version_keeps_it_superseded(
    db: Database, sink: DocumentStoreSink
) -> None:
    sink.write(doc("r1", "h1", "v1", fetched=0))
    sink.write(doc("r1", "h2", "v2", fetched=10))
    rerun = sink.write(doc("r1", "h1", "v1 again", fetched=0))
    assert (rerun.outcome, rerun.current) == ("updated", False)
    current = db.run(lambda uow: uow.documents.current_of("r1"), write=False)
    assert current is not None
    assert current.document.payload_hash == "h2"


def test_versions_racing_from_threads_leave_exactly_one_current_document(db: Database) -> None:
    clock = FakeClock()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        sink = DocumentStoreSink(db, clock)
        barrier.wait()
        try:
            sink.write(doc("hot", f"h{n}", f"version {n}", fetched=n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.run(lambda uow: uow.documents.count(), write=False) == 8
    assert db.run(lambda uow: uow.documents.count(current_only=True), write=False) == 1
    current = db.run(lambda uow: uow.documents.current_of("hot"), write=False)
    assert current is not None
    assert current.document.payload_hash == "h7"


# -- search ---------------------------------------------------------------------------------------


@pytest.fixture
def corpus(sink: DocumentStoreSink) -> None:
    sink.write(
        doc("tz", "a", "The Time Zone Database is often called tz or zoneinfo.", title="Time Zones")
    )
    sink.write(
        doc("root", "a", "IANA manages the DNS root zone and the root servers.", title="Root Zone")
    )
    sink.write(doc("cats", "a", "Cats ingesting catnip; dogs ignore it.", title="Pets"))
    sink.write(doc("old", "a", "A zebra crossed the road.", fetched=0))
    sink.write(doc("old", "b", "A giraffe crossed the road.", fetched=10))


@pytest.mark.usefixtures("corpus")
def test_a_phrase_finds_its_page_and_only_it(db: Database) -> None:
    assert search(db, '"often called tz or zoneinfo"') == ["tz"]
    assert search(db, '"zoneinfo called often"') == []  # a phrase keeps its word order


@pytest.mark.usefixtures("corpus")
def test_words_are_anded_stemmed_and_case_insensitive(db: Database) -> None:
    assert search(db, "ROOT servers") == ["root"]
    assert search(db, "root catnip") == []
    assert search(db, "ingested") == ["cats"]  # English stemming: ingesting ~ ingested


@pytest.mark.usefixtures("corpus")
def test_or_and_exclusion(db: Database) -> None:
    assert sorted(search(db, "catnip or zoneinfo")) == ["cats", "tz"]
    assert search(db, "zone -root") == ["tz"]
    assert search(db, 'zone -"root servers"') == ["tz"]


@pytest.mark.usefixtures("corpus")
def test_a_title_match_ranks_above_a_text_match(db: Database, sink: DocumentStoreSink) -> None:
    sink.write(doc("mention", "a", "Somewhere deep in this text pets are mentioned once."))
    assert search(db, "pets") == ["cats", "mention"]


@pytest.mark.usefixtures("corpus")
def test_superseded_documents_are_found_only_when_asked(db: Database) -> None:
    assert search(db, "zebra") == []
    assert search(db, "giraffe") == ["old"]
    assert search(db, "zebra", include_superseded=True) == ["old"]


@pytest.mark.usefixtures("corpus")
def test_hits_carry_metadata_snippet_and_score_and_pages_do_not_overlap(db: Database) -> None:
    page = db.run(lambda uow: documents.search(uow, "zone", limit=1), write=False)
    assert page.next_offset == 1
    (hit,) = page.results
    assert hit.document.text == ""
    assert hit.text_length > 0
    assert hit.document.language == "en"
    assert hit.document.published == "2026-02-01"
    assert "«" in hit.snippet
    assert "»" in hit.snippet
    assert hit.score > 0
    rest = db.run(lambda uow: documents.search(uow, "zone", limit=10, offset=1), write=False)
    found = [hit.document.id] + [h.document.id for h in rest.results]
    assert len(found) == len(set(found)) == 2
    assert rest.next_offset is None


@pytest.mark.usefixtures("corpus")
@pytest.mark.parametrize(
    "hostile",
    [
        'zone" OR "',
        "zone AND NOT",
        "zone*",
        "NEAR(zone root)",
        "title:zone",
        "zone & | ! :* <-> ()",
        "'; DROP TABLE documents; --",
        '"unterminated phrase zone',
        "zone\x00root",
        "ZONE ^ { } [ ]",
    ],
)
def test_query_syntax_of_either_engine_is_plain_text_here(db: Database, hostile: str) -> None:
    found = search(db, hostile)  # no error, no injected operator
    assert set(found) <= {"tz", "root"}
    assert db.run(lambda uow: uow.documents.count(), write=False) == 5


@pytest.mark.parametrize(
    ("q", "field"),
    [("-only -excluded", "q"), ("!!! ???", "q"), ("x" * 501, "q"), ("w " * 40, "q")],
)
def test_a_query_with_nothing_to_search_for_names_q(db: Database, q: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        search(db, q)
    assert caught.value.field == field


def test_limits_and_offsets_out_of_range_name_their_parameter(db: Database) -> None:
    for kwargs, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        with pytest.raises(InvalidInput) as caught:
            search(db, "zone", **kwargs)
        assert caught.value.field == field


def test_only_the_first_100000_characters_are_indexed(
    db: Database, sink: DocumentStoreSink
) -> None:
    filler = "lorem " * 20_000  # 120,000 characters
    sink.write(doc("long", "a", "beginning " + filler + " ending"))
    assert search(db, "beginning") == ["long"]
    assert search(db, "ending") == []
    stored = db.run(lambda uow: uow.documents.get(document_id("long", "a")), write=False)
    assert stored is not None
    assert stored.document.text.endswith(" ending")


def test_a_document_with_many_distinct_words_is_still_indexed(
    db: Database, sink: DocumentStoreSink
) -> None:
    # 100,000 characters of distinct words, in a script of four-byte characters: the most a
    # tsvector has to hold; it must stay under PostgreSQL's 1 MB limit.
    words = " ".join(chr(0x20000 + n) * 2 for n in range(30_000))[:100_000]
    write = sink.write(replace(doc("wide", "a", words), title="wide page"))
    assert write.outcome == "created"
    assert search(db, "wide page") == ["wide"]
