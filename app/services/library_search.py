"""Finding library photos: by concept (all of, any of, none of), by caption words (full text),
by album and by capture date, combined, always within one owner's library.

Full text runs on what each database has, with one meaning for a query of plain words: every
word must appear in the photo's caption, as a whole word, case folded, without stemming and
with diacritics kept. Captions and queries are split into words here, the same way for both
(:func:`query_words`: runs of letters, digits and underscores), and each photo's words are
stored in ``library_photos.search_text``, one space apart, which is what the databases index;
left to itself, PostgreSQL's parser would read ``<bo>`` as an XML tag and drop it. Then

* SQLite: ``library_photos_fts MATCH '"w1" "w2"'`` on the FTS5 table of migration 0005;
* PostgreSQL: ``to_tsvector('simple', search_text) @@ plainto_tsquery('simple', 'w1 w2')``, the
  expression of the GIN index of migration 0005 (the ``simple`` configuration: no stemming, no
  stop words).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import LIBRARY_FTS_TABLE, LibraryPhoto, LibraryPhotoConcept

#: What one query word is: a run of letters, digits or underscores (FTS5's unicode61 and
#: PostgreSQL's parser split captions at everything else too).
WORD_RE = re.compile(r"\w+")
MAX_QUERY_WORDS = 32
MAX_CONCEPTS = 20


class ConceptMode(StrEnum):
    ALL = "all"
    ANY = "any"


@dataclass(frozen=True)
class PhotoQuery:
    """Filters of a library search; every one given must hold (``concept_mode`` says how the
    ``concepts`` combine among themselves)."""

    concepts: tuple[str, ...] = ()
    concept_mode: ConceptMode = ConceptMode.ALL
    not_concepts: tuple[str, ...] = ()
    text: str | None = None
    #: An album and the albums inside it ("2024" finds "2024/Summer" too).
    album: str | None = None
    #: Capture dates, both days included; photos without a capture time do not match.
    captured_from: dt.date | None = None
    captured_to: dt.date | None = None
    #: True: only captioned photos; False: only photos without a caption.
    captioned: bool | None = None


def concept_key(name: str) -> str:
    """A concept as a search names it: ``<bo>``, ``bo`` and ``Bo`` are one concept."""
    return name.strip().removeprefix("<").removesuffix(">").strip().lower()


def query_words(value: str) -> list[str]:
    """The words of a full-text query, lower-cased.

    >>> query_words("<bo> on the Sofa!")
    ['bo', 'on', 'the', 'sofa']
    """
    return [w.lower() for w in WORD_RE.findall(value)]


def search_text(caption: str) -> str:
    """What full-text search indexes of a caption: its words, one space apart.

    >>> search_text("<bo> naps; <anya>'s kite!")
    'bo naps anya s kite'
    """
    return " ".join(query_words(caption))


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_concepts(names: Sequence[str]) -> ColumnElement[bool]:
    return exists().where(
        LibraryPhotoConcept.photo_id == LibraryPhoto.id,
        func.lower(LibraryPhotoConcept.name).in_(list(names)),
    )


def full_text_condition(dialect: str, words: Sequence[str]) -> ColumnElement[bool]:
    """Photos whose caption holds every word of ``words`` (see the module docstring)."""
    if dialect == "sqlite":
        match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        fts = table(LIBRARY_FTS_TABLE, column("rowid", Integer), column(LIBRARY_FTS_TABLE))
        hits = select(fts.c.rowid).where(fts.c[LIBRARY_FTS_TABLE].op("MATCH")(match))
        return LibraryPhoto.id.in_(hits)
    # The configuration as a constant, not a parameter: the expression must be the index's.
    config: ColumnElement[Any] = literal_column("'simple'::regconfig")
    vector = func.to_tsvector(config, LibraryPhoto.search_text)
    return vector.op("@@")(func.plainto_tsquery(config, " ".join(words)))


def check_query(query: PhotoQuery) -> None:
    """Refuse filters no search can run: too many concepts or words, a query without a
    word, dates the wrong way round."""
    if len(query.concepts) + len(query.not_concepts) > MAX_CONCEPTS:
        raise InvalidInput(f"At most {MAX_CONCEPTS} concepts per search")
    if query.text is not None and query.text.strip():
        words = query_words(query.text)
        if not words:
            raise InvalidInput("Search text needs at least one letter or digit")
        if len(words) > MAX_QUERY_WORDS:
            raise InvalidInput(f"Search text may have at most {MAX_QUERY_WORDS} words")
    if query.captured_from and query.captured_to and query.captured_from > query.captured_to:
        raise InvalidInput("The 'from' date is after the 'to' date")


def photo_query(session: Session, owner_id: int, query: PhotoQuery) -> Select[Any]:
    """The owner's photos matching ``query`` (unordered)."""
    check_query(query)
    conditions: list[ColumnElement[bool]] = [LibraryPhoto.owner_id == owner_id]
    wanted = [k for k in dict.fromkeys(concept_key(n) for n in query.concepts) if k]
    if wanted and query.concept_mode == ConceptMode.ANY:
        conditions.append(_has_concepts(wanted))
    elif wanted:
        conditions.extend(_has_concepts([name]) for name in wanted)
    unwanted = [k for k in dict.fromkeys(concept_key(n) for n in query.not_concepts) if k]
    if unwanted:
        conditions.append(~_has_concepts(unwanted))
    if query.text is not None and query.text.strip():
        dialect = session.get_bind().dialect.name
        conditions.append(full_text_condition(dialect, query_words(query.text)))
    if query.album:
        album = query.album.strip("/")
        conditions.append(
            or_(
                LibraryPhoto.album == album,
                LibraryPhoto.album.like(_like_escape(album) + "/%", escape="\\"),
            )
        )
    if query.captured_from is not None:
        start = dt.datetime.combine(query.captured_from, dt.time(), tzinfo=dt.UTC)
        conditions.append(LibraryPhoto.captured_at >= start)
    if query.captured_to is not None:
        end = dt.datetime.combine(query.captured_to, dt.time(), tzinfo=dt.UTC)
        conditions.append(LibraryPhoto.captured_at < end + dt.timedelta(days=1))
    if query.captioned is True:
        conditions.append(LibraryPhoto.caption_id.is_not(None))
    elif query.captioned is False:
        conditions.append(LibraryPhoto.caption_id.is_(None))
    return select(LibraryPhoto).where(and_(*conditions))


#: Newest capture first; photos without a capture time after them, newest import first.
SEARCH_ORDER = (
    LibraryPhoto.captured_at.desc().nulls_last(),
    LibraryPhoto.id.desc(),
)
