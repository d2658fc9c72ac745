"""``twinspace negotiate``: the DSP contract negotiation from the command line, for both sides.
``request`` starts it (consumer); ``next`` takes whichever step is the caller's turn, so each side
runs the same command until the agreement is FINALIZED."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from twinspace.cli.common import CliError, Connection, JsonOpt, connected, console, emit_json, human

negotiate_app = typer.Typer(help="Negotiate a data-use agreement (DSP): request, next step, show, terminate.",
                            no_args_is_help=True)


def _state(neg: dict) -> str:
    return str(neg.get("state", "")).split(":")[-1]


def offer_iri(client, offer: str) -> str:
    """Accept a full offer IRI or ``<asset id>:<offer id>`` (latest version)."""
    if offer.startswith("urn:twinspace:offer:"):
        return offer
    asset_id, sep, offer_id = offer.rpartition(":")
    if not sep or not asset_id:
        raise CliError(f"{offer!r} is neither an offer IRI nor <asset id>:<offer id>",
                       "copy it from `twinspace catalog show <asset id>`")
    asset = client.catalog_get(asset_id)
    ids = [o.get("id") for o in asset.get("offers") or []]
    if offer_id not in ids:
        raise CliError(f"asset {asset_id} has no offer {offer_id!r}", f"its offers: {', '.join(ids) or 'none'}")
    return f"urn:twinspace:offer:{asset_id}:v{asset['version']}:{offer_id}"


def _print(neg: dict, as_json: bool) -> None:
    if as_json:
        emit_json(neg)
        return
    n = neg.get("twin:negotiation", {})
    t = Table(show_header=False, title=f"negotiation {n.get('id', neg.get('providerPid'))}")
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    for label, value in (("state", _state(neg)), ("asset", f"{n.get('asset_id')} v{n.get('asset_version')}"),
                         ("provider", n.get("provider_id")), ("consumer", n.get("consumer_id")),
                         ("purpose", n.get("purpose")), ("terms", n.get("terms")),
                         ("agreement", n.get("agreement_id"))):
        t.add_row(label, human(value))
    console.print(t)


@negotiate_app.command("request")
@connected
def request(offer: str = typer.Argument(..., help="Offer IRI, or <asset id>:<offer id>."),
            purpose: str = typer.Option(..., help="Why you want the data (checked against the offer's policy)."),
            scenario: Optional[str] = typer.Option(None), not_after: Optional[str] = typer.Option(
                None, help="Agreement end, ISO 8601."), as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Consumer: request an agreement for an offer."""
    client = conn.client()
    neg = client.contract_request(offer_iri(client, offer), purpose, scenario=scenario, not_after=not_after)
    _print(client.contract_get(neg["providerPid"]), as_json)
    if not as_json:
        console.print(f"next: the provider runs `twinspace negotiate next {neg['providerPid']}`")


@negotiate_app.command("next")
@connected
def next_step(negotiation_id: str, as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Take the step that is yours now (offer, accept, agree, verify or finalize); say whose turn it is next."""
    client = conn.client()
    neg = client.contract_get(negotiation_id)
    n = neg["twin:negotiation"]
    me = "provider" if conn.org == n["provider_id"] else "consumer" if conn.org == n["consumer_id"] else None
    if me is None:
        raise CliError(f"{conn.org} is not a party to {negotiation_id}")
    state = _state(neg)
    steps = {("provider", "REQUESTED"): client.contract_offer, ("consumer", "OFFERED"): client.contract_accept,
             ("provider", "ACCEPTED"): client.contract_agree, ("consumer", "AGREED"): client.contract_verify,
             ("provider", "VERIFIED"): client.contract_finalize}
    step = steps.get((me, state))
    if step is None:
        other = "consumer" if me == "provider" else "provider"
        waiting = state not in ("FINALIZED", "TERMINATED")
        raise CliError(f"negotiation {negotiation_id} is {state}: " + (f"it is the {other}'s turn" if waiting
                                                                       else "nothing left to do"),
                       "run `twinspace negotiate show` to see it" if waiting else None, code=1 if waiting else 0)
    step(negotiation_id)
    neg = client.contract_get(negotiation_id)
    _print(neg, as_json)
    agreement = neg["twin:negotiation"].get("agreement_id")
    if not as_json and _state(neg) == "FINALIZED":
        console.print(f"agreement {agreement} is in force: twinspace transfer start {agreement}")


@negotiate_app.command("show")
@connected
def show(negotiation_id: str, as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """A negotiation's state, parties and terms."""
    _print(conn.client().contract_get(negotiation_id), as_json)


@negotiate_app.command("terminate")
@connected
def terminate(negotiation_id: str, reason: Optional[str] = typer.Option(None), as_json: bool = JsonOpt, *,
              conn: Connection) -> None:
    """Either side: end the negotiation."""
    client = conn.client()
    client.contract_terminate(negotiation_id, reason=reason)
    _print(client.contract_get(negotiation_id), as_json)
