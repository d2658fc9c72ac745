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


def _steps(client) -> dict:
    return {("provider", "REQUESTED"): client.contract_offer, ("consumer", "OFFERED"): client.contract_accept,
            ("provider", "ACCEPTED"): client.contract_agree, ("consumer", "AGREED"): client.contract_verify,
            ("provider", "VERIFIED"): client.contract_finalize}


def advance(client, negotiation_id: str, me: str) -> str:
    """Take every step that is ``me``'s turn right now; returns the state reached."""
    steps = _steps(client)
    while True:
        state = _state(client.contract_get(negotiation_id))
        step = steps.get((me, state))
        if step is None:
            return state
        step(negotiation_id)


def follow(client, negotiation_id: str, me: str, timeout: float, interval: float = 0.5) -> str:
    """Keep taking our steps while the other side answers (e.g. a provider running `negotiate auto`)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        state = advance(client, negotiation_id, me)
        if state in ("FINALIZED", "TERMINATED") or time.monotonic() > deadline:
            return state
        time.sleep(interval)


@negotiate_app.command("request")
@connected
def request(offer: str = typer.Argument(..., help="Offer IRI, or <asset id>:<offer id>."),
            purpose: str = typer.Option(..., help="Why you want the data (checked against the offer's policy)."),
            scenario: Optional[str] = typer.Option(None), not_after: Optional[str] = typer.Option(
                None, help="Agreement end, ISO 8601."),
            wait: float = typer.Option(0, "--wait", min=0, help="Seconds to keep taking your steps while the provider "
                                       "answers (open data served by `negotiate auto`): one command to an agreement."),
            as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Consumer: request an agreement for an offer."""
    client = conn.client()
    neg = client.contract_request(offer_iri(client, offer), purpose, scenario=scenario, not_after=not_after)
    pid = neg["providerPid"]
    state = follow(client, pid, "consumer", wait) if wait else "REQUESTED"
    final = client.contract_get(pid)
    _print(final, as_json)
    if as_json:
        return
    if state == "FINALIZED":
        agreement = final["twin:negotiation"].get("agreement_id")
        console.print(f"agreement {agreement} is in force: twinspace transfer start {agreement}")
    else:
        console.print(f"next: the provider runs `twinspace negotiate next {pid}` (or serves open data with "
                      "`twinspace negotiate auto`)")


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
    step = _steps(client).get((me, state))
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


def serve_once(client, org: str, policies: tuple[str, ...]) -> list[dict]:
    """One pass of `negotiate auto`: every provider step due on negotiations under ``policies``."""
    done = []
    for neg in client.get("/contracts/negotiations", params={"limit": 1000})["items"]:
        n = neg["twin:negotiation"]
        if n["provider_id"] != org or n.get("policy_id") not in policies or _state(neg) in ("FINALIZED", "TERMINATED"):
            continue
        before = _state(neg)
        after = advance(client, n["id"], "provider")
        if after != before:
            done.append({"negotiation": n["id"], "from": before, "to": after})
    return done


@negotiate_app.command("auto")
@connected
def auto(policy: list[str] = typer.Option(["open-data"], "--policy", help="Offers under these policies need no "
                                           "review and are answered automatically (repeatable)."),
         watch: float = typer.Option(0, "--watch", min=0, help="Keep serving, checking every N seconds (0: once)."),
         as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Provider: take every provider step of the negotiations on offers that need no review (open data by
    default): offer the requested terms, sign with your key (here), finalise. Others wait for `next`."""
    import time

    client = conn.client()
    while True:
        done = serve_once(client, conn.org, tuple(policy))
        if as_json:
            emit_json(done) if not watch else [print(__import__("json").dumps(d)) for d in done]
        else:
            for d in done:
                console.print(f"{d['negotiation']}: {d['from']} → {d['to']}")
            if not done and not watch:
                console.print("no negotiation waiting for you on those offers")
        if not watch:
            return
        time.sleep(watch)
