"""Demo step: what another vendor's connector or a CKAN harvester sees — DSP 2025-1, ODRL 2.2, DCAT-AP 3."""

from __future__ import annotations

from rich.table import Table

from twinspace.dsp import schemas
from twinspace.dsp.messages import PLAIN_CONTEXT


def step_standards(ctx) -> None:
    """Standards at the boundary: the DSP version document and catalog, an ODRL offer, DCAT-AP 3 Turtle."""
    consumer = ctx.client("consumer")
    http, headers = ctx.http, consumer.headers()
    version = http.get("/.well-known/dspace-version")
    version.raise_for_status()
    request = {"@context": PLAIN_CONTEXT, "@type": "CatalogRequestMessage"}
    catalog = http.post("/dsp/catalog/request", headers={**headers, "Content-Type": "application/ld+json"},
                        json=request)
    catalog.raise_for_status()
    doc = catalog.json()
    problems = schemas.errors(doc, "Catalog")
    if problems:
        raise RuntimeError(f"the DSP catalog does not match its schema: {problems[:3]}")
    datasets = doc.get("dataset") or []
    offer = next((o for d in datasets for o in d.get("hasPolicy", [])), {})
    turtle = http.get("/catalog/dcat", headers=headers, params={"format": "turtle"})
    turtle.raise_for_status()
    table = Table(show_header=False, title="What a third-party connector or harvester sees")
    versions = ", ".join(v.get("version", "?") for v in version.json().get("protocolVersions", []))
    table.add_row("GET /.well-known/dspace-version", f"DSP {versions}")
    table.add_row("POST /dsp/catalog/request", f"Catalog of {doc.get('participantId')}: {len(datasets)} datasets, "
                                               "valid against the DSP 2025-1 catalog schema")
    rules = [k for k in ("permission", "prohibition", "obligation") if offer.get(k)]
    constraints = sorted({str(c.get("leftOperand", {}).get("@id") if isinstance(c.get("leftOperand"), dict)
                              else c.get("leftOperand"))
                          for r in offer.get("permission", []) for c in r.get("constraint", []) if isinstance(c, dict)})
    table.add_row("an ODRL 2.2 offer", f"{offer.get('@id', '-')}: {', '.join(rules) or 'no rules'}"
                                       + (f"; constraints on {', '.join(constraints)}" if constraints else ""))
    from rdflib import Graph, Namespace, RDF

    graph = Graph().parse(data=turtle.text, format="turtle")
    n_datasets = len(set(graph.subjects(RDF.type, Namespace("http://www.w3.org/ns/dcat#").Dataset)))
    table.add_row("GET /catalog/dcat?format=turtle", f"DCAT-AP 3.0.1: {len(graph):,} triples, {n_datasets} "
                                                     "dcat:Dataset (SHACL-valid: tests/catalog)")
    ctx.console.print(table)
    ctx.state["standards"] = {"datasets": len(datasets), "offer": offer.get("@id")}
