"""Demo steps for privacy-preserving queries: plaintext-predicate queries answered with OpenDP noise and
a fresh encryption under the consumer's key, and a secure aggregation across two providers, under aggregation-only agreements ("usable but not visible")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from rich.table import Table

# Nothing unsafe is turned on: encrypted masks are not offered at all (docs/privacy-queries.md); the
# budget is the consumer's on the asset, whatever number of agreements it negotiates.
ENERGY_OFFER = [{"id": "aggregate", "policy_id": "aggregation-only",
                 "params": {"epsilon_per_query": 1.0, "privacy_budget": 10.0, "min_cohort": 10}}]


def _energy_table(n: int, seed: int) -> pa.Table:
    """Synthetic yearly electricity use of public buildings (kWh), by district."""
    rng = np.random.default_rng(seed)
    districts = ["Daan", "Xinyi", "Zhongshan", "Wanhua", "Beitou"]
    area = rng.integers(300, 6000, n)
    return pa.table({"building_code": [f"TW-TPE-BS-PUB-{seed}{i:05d}" for i in range(n)],
                     "district": [districts[i] for i in rng.integers(0, len(districts), n)],
                     "floor_area_m2": area, "kwh_year": (area * rng.uniform(80, 160, n)).round().astype(np.int64)})


def _publish(ctx, label: str, table: pa.Table, title: str) -> dict:
    from connectors.publish import prepare

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    meta = prepare(data, title=title, classification="internal", domain="energy", offers=ENERGY_OFFER,
                   twin_category="building_structure", entity_type="Building",
                   description="Yearly electricity use per public building; aggregate queries only.",
                   units={"kwh_year": "kWh", "floor_area_m2": "m2"})
    return ctx.publish(label, meta, data)


def step_encrypted_query(ctx) -> None:
    """Encrypted queries, computed at the provider's connector: the consumer's secret key stays with it; the
    connector adds DP noise and encrypts; the broker routes ciphertexts and debits the privacy budget."""
    from twinspace.client.query import ConsumerKeys, QueryClient
    from twinspace.client.broker import BrokerError, negotiate

    consumer = ctx.client("consumer")
    tables = {"provider2": _energy_table(800, seed=1), "provider": _energy_table(500, seed=2)}
    agreements, assets = {}, {}
    for label, title in (("provider2", "Public building energy use (planning)"),
                         ("provider", "Transport facility energy use")):
        asset = _publish(ctx, label, tables[label], title)
        assets[label] = asset
        agreements[label] = negotiate(consumer, ctx.client(label),
                                      f"urn:twinspace:offer:{asset['id']}:v{asset['version']}:aggregate", "research")
    keys = ConsumerKeys.create("bfv")
    q = QueryClient(consumer, keys)
    table = tables["provider2"]
    kwh = table.column("kwh_year").to_numpy()
    district = np.array(table.column("district").to_pylist())
    agreement_id = agreements["provider2"]["id"]
    heavy = [{"column": "district", "op": "eq", "value": "Xinyi"}, {"column": "kwh_year", "op": "gt", "value": 500_000}]
    count = q.predicate(agreement_id, heavy, kind="count")
    daan = q.predicate(agreement_id, [{"column": "district", "op": "eq", "value": "Daan"}], kind="sum",
                       column="kwh_year", bound=1_000_000)
    out = Table("query", "encrypted answer, decrypted by the consumer", "plaintext (provider only)",
                "epsilon", title=f"Encrypted queries on {assets['provider2']['title']} ({keys.params.name})")
    out.add_row("buildings in Xinyi above 500 MWh (noisy count, cohort ≥ 10 on a noisy count)",
                f"{count['values']['count']:,}", f"{int(((district == 'Xinyi') & (kwh > 500_000)).sum()):,}",
                str(count["epsilon"]))
    out.add_row("Σ kWh where district = Daan (discrete Laplace, Δ = 2 × bound)", f"{daan['values']['sum']:,}",
                f"{int(kwh[district == 'Daan'].sum()):,}", str(daan["epsilon"]))
    ctx.console.print(out)
    logged = ctx.client("auditor").get("/audit/entries", params={"kind": "privacy.query",
                                                                 "agreement_id": agreement_id})["entries"]
    where = {e["entry"]["details"].get("connector") for e in logged} - {None}
    ctx.console.print(f"Computed at the provider's connector ({', '.join(sorted(where)) or '?'}) on its own rows; "
                      f"{len(logged)} signed connector receipts are in the audit log; the broker saw ciphertexts only.")
    budget = q.budget(agreement_id)
    ctx.console.print(f"Privacy budget of {agreement_id}: {budget['epsilon_spent']:g} of "
                      f"{budget['epsilon_total']:g} spent, {budget['epsilon_remaining']:g} left.")
    try:
        consumer.transfer_request(agreement_id)
    except BrokerError as exc:
        ctx.console.print(f"A plain download under this aggregation-only agreement is refused: "
                          f"[red]{exc.status} {exc.code}[/]")
    else:
        raise RuntimeError("an aggregation-only agreement allowed a download")
    ctx.state["energy"] = {"tables": tables, "assets": assets, "agreements": agreements, "keys": keys}


def step_secure_aggregation(ctx) -> None:
    """Secure aggregation: each provider encrypts its own noised statistics under the consumer's public
    context; the broker adds ciphertexts and releases only the total, once."""
    from twinspace.client.query import QueryClient, contribute_pending

    energy = ctx.state["energy"]
    q = QueryClient(ctx.client("consumer"), energy["keys"])
    rnd = q.open_round([a["id"] for a in energy["agreements"].values()], "kwh_year", bound=1_000_000)
    for label in ("provider2", "provider"):
        contribute_pending(ctx.client(label), {energy["assets"][label]["id"]: energy["tables"][label]})
    total = q.round_result(rnd["round_id"])
    truth = sum(int(t.column("kwh_year").to_numpy().sum()) for t in energy["tables"].values())
    rows = sum(t.num_rows for t in energy["tables"].values())
    out = Table("statistic", "decrypted total (DP-noised by each provider)", "plaintext (nobody sees this)",
                title=f"Secure aggregation {rnd['round_id']} across {total['contributions']} providers")
    out.add_row("Σ kWh", f"{total['values']['sum']:,}", f"{truth:,}")
    out.add_row("buildings", f"{total['values']['count']:,}", f"{rows:,}")
    ctx.console.print(out)
    ctx.console.print("The broker held only ciphertexts; no single provider's contribution was released.")
