"""The catalog in SQL: the SQL visibility rule equals ``service.can_see`` on every combination, cursor
pages neither skip nor repeat, counts are right (and capped), bad cursors are 400, and SQLite's query
plans use the intended indexes (GET by primary key, list and count on covering indexes)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlmodel import Session, func, select

from broker.catalog import query, service
from broker.catalog.models import Asset, AssetAudience, AssetTerm
from broker.identity.models import Org
from twinspace.errors import BadRequest

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
AUDIENCES = [None, {"org_types": ["government_agency"]}, {"org_ids": ["org_c1"]}, {"org_types": [], "org_ids": []}]


def _row(i: int, *, provider: str, classification: str, status: str, is_latest: bool, audiences: list,
         created: datetime | None = None) -> tuple[dict, list[dict]]:
    offers = [{"id": f"o{j}", "policy_id": "open-data", "params": {"audience": a} if a is not None else {}}
              for j, a in enumerate(audiences)]
    restricted, rows = query.audience_rows(f"ast_{i:06d}", 1, offers)
    asset = dict(id=f"ast_{i:06d}", version=1, provider_id=provider, status=status, is_latest=is_latest,
                 title=f"Asset {i}", description="parking lots" if i % 7 == 0 else "buildings", keywords=["k"],
                 twin_category="other", entity_type="Thing", entity_code_scheme="", region=None,
                 classification=classification, domain="transport", columns=[{"name": "a", "type": "int64"}],
                 row_count=1, content_hash="0" * 64, byte_size=1, deid_report={"big": "x" * 100}, offers=offers,
                 created_at=created or T0 + timedelta(seconds=i), audience_restricted=restricted,
                 search_text=service.search_text(f"Asset {i}", "parking lots" if i % 7 == 0 else "buildings",
                                                 ["k"], "Thing", "transport"))
    return asset, [r.model_dump() for r in rows], [t.model_dump() for t in query.term_rows(asset["id"], 1, asset["search_text"])]


@pytest.fixture
def any_engine(database_url, tmp_path):
    """A migrated database: SQLite, and PostgreSQL when it is reachable."""
    from broker.storage.db import make_engine, migrate

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'q.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def matrix(any_engine):
    """One row for every combination of provider x classification x status x audience set."""
    with Session(any_engine) as s:
        for org in ("org_p1", "org_p2"):
            s.add(Org(id=org, name=org, role="provider", org_type="enterprise"))
        s.commit()
        assets, audience = [], []
        combos = itertools.product(["org_p1", "org_p2"], ["public", "internal", "sensitive", "core"],
                                   [("active", True), ("superseded", False), ("withdrawn", True)],
                                   [[a] for a in AUDIENCES] + [[AUDIENCES[1], AUDIENCES[2]], [AUDIENCES[3], None]])
        for i, (prov, cls, (status, latest), auds) in enumerate(combos):
            a, rows, _ = _row(i, provider=prov, classification=cls, status=status, is_latest=latest, audiences=auds)
            assets.append(a)
            audience += rows
        s.execute(sa.insert(Asset.__table__), assets)
        if audience:
            s.execute(sa.insert(AssetAudience.__table__), audience)
        s.commit()
    return any_engine


CALLERS = [dict(org_id=o, role=r, org_type=t, attributes=a) for o, r, t, a in [
    ("org_c1", "consumer", "enterprise", {}), ("org_c2", "consumer", "government_agency", {"clearance": "sensitive"}),
    ("org_c3", "consumer", "enterprise", {"clearance": "core"}), ("org_c4", "consumer", "other", {"clearance": "bogus"}),
    ("org_p1", "provider", "enterprise", {"clearance": "internal"}), ("org_a", "auditor", "audit_office", {}),
    ("org_o", "operator", "other", {})]]


@pytest.mark.parametrize("caller", CALLERS, ids=[c["org_id"] for c in CALLERS])
@pytest.mark.parametrize("history", [False, True])
def test_sql_visibility_equals_can_see(matrix, caller, history):
    with Session(matrix) as s:
        every = s.exec(select(Asset)).all()
        expected = {a.id for a in every if (history or a.is_latest) and service.can_see(a, **caller)}
        page = service.search_page(s, **caller, include_history=history, limit=200, audit=False)
        assert {a.id for a in page.items} == expected and page.total == len(expected) and page.total_exact
    assert expected  # the matrix exercises something for every caller


def test_cursor_pages_cover_everything_once_even_with_equal_timestamps(any_engine):
    with Session(any_engine) as s:
        s.add(Org(id="org_p", name="p", role="provider"))
        s.commit()
        made = [_row(i, provider="org_p", classification="public", status="active", is_latest=True,
                     audiences=[None], created=T0 + timedelta(seconds=i // 3)) for i in range(103)]
        s.execute(sa.insert(Asset.__table__), [m[0] for m in made])
        s.execute(sa.insert(AssetTerm.__table__), [t for m in made for t in m[2]])
        s.commit()
        seen, cursor = [], None
        while True:
            page = query.search(s, org_id="org_c", role="consumer", limit=10, cursor=cursor)
            seen += [a.id for a in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 103
        assert seen == [a.id for a in query.search(s, org_id="org_c", role="consumer", limit=200).items]
        # the count stops at the cap: bounded work, flagged as not exact
        capped = query.search(s, org_id="org_c", role="consumer", limit=5, count_cap=50)
        assert (capped.total, capped.total_exact) == (50, False)
        assert query.search(s, org_id="org_c", role="consumer", limit=5, count_cap=500).total == 103
        # q is a case-insensitive substring of title/description/keywords/type/domain, LIKE wildcards literal
        assert query.search(s, org_id="org_c", role="consumer", q="PARKING", limit=200).total == 15
        assert query.search(s, org_id="org_c", role="consumer", q="%", limit=200).total == 0
        # the export iterator pages by keyset and returns every row, whatever the page size
        pages = list(query.iter_pages(lambda: Session(any_engine), page_size=7, org_id="org_c", role="consumer"))
        assert sum(len(p) for p in pages) == 103 and len(pages) == 15


@pytest.mark.parametrize("token", ["", "x", "!!!!", "eyJ4IjoxfQ", "WyIyMDI1IiwgMSwgMV0", "W251bGwsImEiLDFd"])
def test_bad_cursor_is_a_400(token):
    with pytest.raises(BadRequest) as info:
        query.decode_cursor(token or "=")
    assert info.value.code == "bad_cursor"


def test_bad_cursor_over_http_is_a_problem(make_org):
    org = make_org("consumer")
    resp = org.client.http.get("/catalog/assets", params={"cursor": "nope"}, headers=org.client.headers())
    assert resp.status_code == 400 and resp.json()["code"] == "bad_cursor"


def _plan(engine, stmt) -> str:
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return " | ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))


def test_sqlite_query_plans_use_the_intended_indexes(matrix):
    if matrix.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    consumer = query.conditions(org_id="org_c1", role="consumer", org_type="enterprise", clearance="internal")
    get_one = select(Asset).where(Asset.id == "ast_000001").order_by(Asset.version.desc()).limit(1)
    plan = _plan(matrix, get_one)
    assert "sqlite_autoindex_catalog_asset_1 (id=?)" in plan and "is_latest" not in plan, plan
    listing = _plan(matrix, select(Asset).where(*consumer).order_by(*query.ORDER).limit(51))
    assert "ix_catalog_asset_list" in listing and "TEMP B-TREE" not in listing, listing
    counting = _plan(matrix, select(func.count()).select_from(Asset).where(*consumer))
    assert "COVERING INDEX ix_catalog_asset_visible" in counting, counting
    # the audience check is a primary-key probe, not a scan
    assert "SCAN catalog_asset_audience" not in listing + counting


@pytest.mark.parametrize("selective", [0, 10_000], ids=["walk-list-index", "driven-by-term-index"])
def test_q_matches_word_prefixes_the_same_on_both_plans(any_engine, monkeypatch, selective):
    monkeypatch.setattr(query, "SELECTIVE", selective)
    with Session(any_engine) as s:
        s.add(Org(id="org_p", name="p", role="provider"))
        s.commit()
        made = [_row(i, provider="org_p", classification="public", status="active", is_latest=True,
                     audiences=[None]) for i in range(60)]
        s.execute(sa.insert(Asset.__table__), [m[0] for m in made])
        s.execute(sa.insert(AssetTerm.__table__), [t for m in made for t in m[2]])
        s.commit()
        for q in ("park", "PARKING lots", "asset 1", "lots park", "build", "uildings", "zebra", "asset_1"):
            words = query.terms(q)
            expected = {m[0]["id"] for m in made
                        if all(any(t.startswith(w) for t in query.terms(m[0]["search_text"])) for w in words)}
            page = query.search(s, org_id="org_c", role="consumer", q=q, limit=200)
            assert {a.id for a in page.items} == expected and page.total == len(expected), q
        assert query.search(s, org_id="org_c", role="consumer", q="asset 1", limit=200).total == 11  # 1, 10..19


def test_a_rare_q_word_is_looked_up_by_primary_key_not_by_walking_an_index(matrix, monkeypatch):
    if matrix.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    monkeypatch.setattr(query, "SELECTIVE", 5)
    with Session(matrix) as s:
        s.execute(sa.insert(AssetTerm.__table__), [{"asset_id": "ast_000003", "version": 1, "term": "quokka"}]
                  + [{"asset_id": f"ast_{i:06d}", "version": 1, "term": "asset"} for i in range(10)])
        where = query.conditions(org_id="org_c1", role="consumer", org_type="enterprise", q="Quokka", session=s)
        assert where.driven
        plan = _plan(matrix, select(Asset).where(*where).order_by(*query.ORDER_UNINDEXED).limit(51))
        assert "sqlite_autoindex_catalog_asset_1 (id=?)" in plan and "ix_catalog_asset" not in plan, plan
        common = query.conditions(org_id="org_c1", role="consumer", org_type="enterprise", q="asset", session=s)
        assert not common.driven  # more than SELECTIVE rows have "asset": walk the list index instead
