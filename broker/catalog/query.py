"""Catalog reads in SQL: visibility, filters, search, keyset (cursor) pagination and counts run in the
database, so a page of 50 costs the same at 100k assets as at 1k (docs/catalog.md#queries).

The visibility rule is the one documented in ``broker.catalog.service``; :func:`visible` is its SQL
form and ``service.can_see`` its Python form for one row (kept equal by tests/catalog/test_query.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, exists, func, literal, literal_column, or_, true, tuple_
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from broker.catalog.models import Asset, AssetAudience, AssetTerm
from broker.catalog.schemas import CLASSIFICATION_ORDER
from twinspace.errors import BadRequest

# Large columns a list never needs (the de-identification report is tens of KiB for wide tables).
LIST_DEFERRED = (defer(Asset.deid_report),)  # type: ignore[arg-type]
ORDER = (col(Asset.created_at).desc(), col(Asset.id).desc(), col(Asset.version).desc())
# The same order through SQLite's no-op unary +, which keeps the planner off the list index (used when
# a rare q word has already narrowed the rows to a few primary-key lookups).
ORDER_UNINDEXED = (literal_column("+catalog_asset.created_at").desc(), literal_column("+catalog_asset.id").desc(),
                   literal_column("+catalog_asset.version").desc())


class Where(list):
    """WHERE terms, and whether a rare word of ``q`` drives the query (then order without the index)."""

    driven: bool = False
WORD = re.compile(r"\w+")
SELECTIVE = 1000  # a q word with at most this many term rows drives the query from the term index


def terms(text: str) -> set[str]:
    """The words ``q`` can find in a ``search_text`` (and the words of ``q`` itself)."""
    return {w[:64] for w in WORD.findall(text.lower())}


def term_rows(asset_id: str, version: int, search_text: str) -> list[AssetTerm]:
    return [AssetTerm(asset_id=asset_id, version=version, term=t) for t in sorted(terms(search_text))]


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _term_match(word: str, dialect: str) -> Any:
    """Terms that start with ``word``: a range on SQLite's binary collation; on PostgreSQL a LIKE prefix,
    served by the text_pattern_ops index whatever the database collation."""
    if dialect == "postgresql":
        return col(AssetTerm.term).like(_like_escape(word) + "%", escape="\\")
    return and_(col(AssetTerm.term) >= word, col(AssetTerm.term) < word[:-1] + chr(ord(word[-1]) + 1))


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def audience_rows(asset_id: str, version: int, offers: list[dict[str, Any]]) -> tuple[bool, list[AssetAudience]]:
    """(audience_restricted, audience rows) derived from an asset version's offers: restricted when
    every offer names an audience (``service.offer_admits``); the rows list whom they admit."""
    audiences = [(o.get("params") or {}).get("audience") for o in offers]
    if any(not a for a in audiences):
        return False, []
    seen: set[tuple[str, str]] = set()
    for a in audiences:
        seen.update(("type", str(v)) for v in a.get("org_types") or [] if len(str(v)) <= 64)
        seen.update(("org", str(v)) for v in a.get("org_ids") or [] if len(str(v)) <= 64)
    return True, [AssetAudience(asset_id=asset_id, version=version, kind=k, value=v) for k, v in sorted(seen)]


def _c(column: Any, unindexed: bool) -> Any:
    """``column``, or on SQLite ``+column`` (same value) so that the planner does not pick an index for it."""
    if not unindexed:
        return col(column)
    return literal_column(f"+catalog_asset.{column.key}", column.type)


def visible(*, org_id: str, role: str, org_type: str, clearance: str, unindexed: bool = False) -> Any:
    """The SQL condition "this caller may see this row" (consumer rule; providers also see their own;
    auditors and operators see everything)."""
    if role in ("auditor", "operator"):
        return true()
    allowed = [c for c, rank in CLASSIFICATION_ORDER.items() if rank <= CLASSIFICATION_ORDER[clearance]]
    admitted = exists().where(AssetAudience.asset_id == Asset.id, AssetAudience.version == Asset.version,
                              or_(and_(AssetAudience.kind == "type", AssetAudience.value == org_type),
                                  and_(AssetAudience.kind == "org", AssetAudience.value == org_id)))
    consumer = and_(_c(Asset.is_latest, unindexed).is_(True), _c(Asset.status, unindexed) == "active",
                    _c(Asset.classification, unindexed).in_(allowed),
                    or_(_c(Asset.audience_restricted, unindexed).is_(False), admitted))
    if role == "provider":
        return or_(_c(Asset.provider_id, unindexed) == org_id, consumer)
    return consumer


# --------------------------------------------------------------------------- cursors
def encode_cursor(asset: Asset) -> str:
    raw = json.dumps([_utc(asset.created_at).isoformat(), asset.id, asset.version], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str, int]:
    """The position after which the next page starts; a malformed token is a 400, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, asset_id, version = json.loads(raw)
        when = datetime.fromisoformat(created)
        if not isinstance(asset_id, str) or len(asset_id) > 64 or type(version) is not int:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("The cursor is not one this catalog issued.", code="bad_cursor") from None
    return _utc(when), asset_id, version


def _after(cursor: tuple[datetime, str, int]) -> Any:
    created = Asset.__table__.c.created_at  # type: ignore[attr-defined]
    return tuple_(created, Asset.id, Asset.version) < tuple_(literal(cursor[0], created.type), literal(cursor[1]),
                                                             literal(cursor[2]))


# --------------------------------------------------------------------------- search
@dataclass
class Page:
    items: list[Asset]
    total: int
    total_exact: bool
    next_cursor: str | None


def conditions(*, org_id: str, role: str, org_type: str = "other", clearance: str = "public",
               q: str | None = None, twin_category: str | None = None, entity_type: str | None = None,
               domain: str | None = None, classification: str | None = None, provider: str | None = None,
               bbox: list[float] | None = None, time_from: datetime | None = None,
               time_to: datetime | None = None, include_history: bool = False,
               session: Session | None = None) -> Where:
    """The WHERE clause of a search. ``q``: every word of it must start a word of the asset's title,
    description, keywords, entity type or domain (case-insensitive); with no word in it (only
    punctuation), a substring match. Given the session, the rarest word of ``q`` (counted on the term
    index, at most SELECTIVE + 1) drives the query when it is selective, so a rare word costs the same
    at any catalog size, while a common one is found by walking the list index."""
    dialect = session.get_bind().dialect.name if session is not None else "sqlite"
    words = sorted(terms(q)) if q else []
    rarest: set[str] | None = None
    if words and session is not None:
        def hits(word: str) -> set[str]:
            return set(session.exec(select(AssetTerm.asset_id).where(_term_match(word, dialect))
                                    .limit(SELECTIVE + 1)).all())

        rarest = min((hits(w) for w in words), key=len)
        rarest = rarest if len(rarest) <= SELECTIVE else None
    plain = rarest is not None and dialect == "sqlite"
    where = Where([visible(org_id=org_id, role=role, org_type=org_type, clearance=clearance, unindexed=plain)])
    where.driven = plain
    if rarest is not None:
        # a literal id list, looked up by primary key (then a few rows sorted); on SQLite the other
        # indexed columns are written +column, or the planner would walk an index over every row
        where.append(col(Asset.id).in_(sorted(rarest)))
    if not include_history:
        where.append(_c(Asset.is_latest, plain).is_(True))
    if q and not words:
        where.append(col(Asset.search_text).like("%" + _like_escape(q.lower()) + "%", escape="\\"))
    for word in words:
        where.append(exists().where(AssetTerm.asset_id == Asset.id, AssetTerm.version == Asset.version,
                                    _term_match(word, dialect)))
    for column, value in ((Asset.twin_category, twin_category), (Asset.entity_type, entity_type),
                          (Asset.domain, domain), (Asset.classification, classification),
                          (Asset.provider_id, provider)):
        if value:
            where.append(_c(column, plain) == value)
    if bbox:
        w, s, e, n = bbox
        where.append(and_(col(Asset.min_lon).is_not(None), col(Asset.min_lon) <= e, col(Asset.max_lon) >= w,
                          col(Asset.min_lat) <= n, col(Asset.max_lat) >= s))
    if time_from is not None:
        where.extend([col(Asset.time_end).is_not(None), col(Asset.time_end) >= _utc(time_from)])
    if time_to is not None:
        where.extend([col(Asset.time_start).is_not(None), col(Asset.time_start) <= _utc(time_to)])
    return where


def count(session: Session, where: list[Any], cap: int | None = None) -> int:
    """Matches, counted by the database on a covering index; with ``cap``, counting stops there, so the
    cost of a count no longer grows with the catalog (``total_exact`` false in the API)."""
    if cap is None:
        return session.exec(select(func.count()).select_from(Asset).where(*where)).one()
    capped = select(literal(1)).select_from(Asset).where(*where).limit(cap + 1).subquery()
    return session.exec(select(func.count()).select_from(capped)).one()


def search(session: Session, *, limit: int = 50, offset: int = 0, cursor: str | None = None,
           count_cap: int | None = None, full: bool = False, **filters: Any) -> Page:
    """One page, newest first, and the number of matches; both computed by the database. ``cursor``
    (from the previous page's ``next_cursor``) seeks straight to the next page; ``offset`` still works
    but costs O(offset). ``count_cap``: count at most that many + 1 (see :func:`count`)."""
    where = conditions(**filters, session=session)
    stmt = select(Asset).where(*where).order_by(*(ORDER_UNINDEXED if where.driven else ORDER))
    if not full:
        stmt = stmt.options(*LIST_DEFERRED)
    if cursor:
        stmt = stmt.where(_after(decode_cursor(cursor)))
    elif offset:
        stmt = stmt.offset(offset)
    rows = list(session.exec(stmt.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    total = count(session, where, count_cap)
    exact = count_cap is None or total <= count_cap
    return Page(rows, min(total, count_cap) if count_cap is not None else total, exact,
                encode_cursor(rows[-1]) if more and rows else None)


def iter_pages(session_factory: Any, *, page_size: int = 500, **filters: Any) -> Iterator[list[Asset]]:
    """Every matching row in pages, each read in its own short session (a streamed export never holds a
    connection between pages), by keyset so that no page is skipped or repeated and nothing is capped."""
    after: tuple[datetime, str, int] | None = None
    where = conditions(**filters)
    while True:
        stmt = select(Asset).where(*where).order_by(*ORDER).options(*LIST_DEFERRED).limit(page_size)
        if after is not None:
            stmt = stmt.where(_after(after))
        with session_factory() as session:
            rows = list(session.exec(stmt).all())
            session.expunge_all()
        if not rows:
            return
        yield rows
        last = rows[-1]
        after = (_utc(last.created_at), last.id, last.version)
        if len(rows) < page_size:
            return


def summary(session: Session, **filters: Any) -> dict[str, Any]:
    """Count, first/last publication and the union extent of the matching rows (the catalog header)."""
    where = conditions(**filters)
    row = session.exec(select(func.count(), func.min(Asset.created_at), func.max(Asset.created_at),
                              func.min(Asset.min_lon), func.min(Asset.min_lat), func.max(Asset.max_lon),
                              func.max(Asset.max_lat)).select_from(Asset).where(*where)).one()
    n, first, last, w, s, e, north = row
    return {"count": n, "issued": _utc(first), "modified": _utc(last),
            "bbox": [w, s, e, north] if None not in (w, s, e, north) else None}


def latest(session: Session, asset_id: str, *, full: bool = True) -> Asset | None:
    """The newest version of one asset by primary key (``id`` = ?, highest ``version``): the latest
    version is always the highest, so no ``is_latest`` lookup is needed."""
    stmt = select(Asset).where(Asset.id == asset_id).order_by(col(Asset.version).desc()).limit(1)
    if not full:
        stmt = stmt.options(*LIST_DEFERRED)
    return session.exec(stmt).first()


