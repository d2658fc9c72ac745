"""The DCAT-AP 3.0.1 export of everything a caller may see, streamed: the catalog header from one
aggregate query, then the datasets page by page (keyset, each page in its own short session), so the
export is complete at any size and its memory is bounded by one page (docs/catalog.md#dcat-ap)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.catalog import query, service
from broker.catalog.models import Asset
from broker.identity.models import Org
from twinspace import dcat

PAGE_SIZE = 500
MEDIA_TYPES = {"jsonld": "application/ld+json", "turtle": "text/turtle"}


def negotiate(fmt: str | None, accept: str | None) -> str:
    """``format=`` wins; otherwise Turtle when the Accept header names it before JSON-LD/JSON."""
    if fmt:
        return fmt
    accept = (accept or "").lower()
    ttl, ld = accept.find("text/turtle"), min((i for i in (accept.find("application/ld+json"),
                                                          accept.find("application/json")) if i >= 0), default=-1)
    return "turtle" if ttl >= 0 and (ld < 0 or ttl < ld) else "jsonld"


class _Publishers:
    """``foaf:Agent`` nodes of the providers met so far (one query per page for the new ones)."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, Any]] = {}

    def load(self, session: Session, org_ids: set[str]) -> None:
        missing = org_ids - set(self.known)
        if missing:
            for org in session.exec(select(Org).where(col(Org.id).in_(sorted(missing)))).all():
                self.known[org.id] = dcat.agent(org.id, org.name, org.org_type)
        for org_id in missing - set(self.known):
            self.known[org_id] = dcat.agent(org_id, org_id, "other")


def stream(engine: Engine, *, principal: Any, base_url: str, fmt: str, operator: str,
           page_size: int = PAGE_SIZE) -> Iterator[bytes]:
    """The whole export as encoded chunks. Runs after the route returned: it opens its own sessions."""
    filters = dict(org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                   clearance=service.clearance_of(principal.attributes))
    factory: Callable[[], Session] = lambda: Session(engine, expire_on_commit=False)  # noqa: E731
    with factory() as session:
        head = query.summary(session, **filters)
        record_event(session, "catalog.export", actor=principal.org_id,
                     details={"format": fmt, "datasets": head["count"]})
        session.commit()
    header = dcat.catalog_node(
        base_url=base_url, catalog_id="urn:twinspace:catalog", title="TwinSpace catalog",
        description="Digital-twin city datasets offered through this TwinSpace data space, each under "
                    "ODRL usage policies negotiated over the Dataspace Protocol.",
        publisher=dcat.agent(operator, operator, "other"), operator_id=operator,
        issued=service._iso(head["issued"]), modified=service._iso(head["modified"]), bbox=head["bbox"])
    publishers = _Publishers()

    def datasets() -> Iterator[dict[str, Any]]:
        for page in query.iter_pages(factory, page_size=page_size, **filters):
            with factory() as session:
                publishers.load(session, {a.provider_id for a in page})
            for asset in page:
                yield dcat.dataset_node(_view(asset), base_url=base_url, publisher=publishers.known[asset.provider_id])

    chunks = dcat.turtle_chunks(header, datasets()) if fmt == "turtle" else dcat.jsonld_chunks(header, datasets())
    buffer: list[str] = []
    size = 0
    for chunk in chunks:
        buffer.append(chunk)
        size += len(chunk)
        if size >= 64 * 1024:
            yield "".join(buffer).encode("utf-8", "backslashreplace")
            buffer, size = [], 0
    yield "".join(buffer).encode("utf-8", "backslashreplace")


def _view(asset: Asset) -> dict[str, Any]:
    return service.asset_view(asset, full=False)
