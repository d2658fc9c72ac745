"""Dataspace Protocol state machines (pure): contract negotiation and transfer process.

Negotiation (DSP contract negotiation protocol)::

    (new) --ContractRequestMessage--> REQUESTED --ContractOfferMessage--> OFFERED
    OFFERED --ContractRequestMessage (counter-request)--> REQUESTED
    OFFERED --event ACCEPTED--> ACCEPTED
    REQUESTED | ACCEPTED --ContractAgreementMessage--> AGREED
    AGREED --ContractAgreementVerificationMessage--> VERIFIED
    VERIFIED --event FINALIZED--> FINALIZED
    any non-terminal --ContractNegotiationTerminationMessage--> TERMINATED

Transfer process: REQUESTED -> STARTED -> COMPLETED; STARTED <-> SUSPENDED; any non-terminal -> TERMINATED.
"""

from __future__ import annotations

from enum import Enum

from twinspace.errors import Conflict


class NegotiationState(str, Enum):
    REQUESTED = "REQUESTED"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    TERMINATED = "TERMINATED"


NEGOTIATION_TERMINAL = frozenset({NegotiationState.FINALIZED, NegotiationState.TERMINATED})

NEGOTIATION_TRANSITIONS: dict[NegotiationState | None, frozenset[NegotiationState]] = {
    None: frozenset({NegotiationState.REQUESTED}),
    NegotiationState.REQUESTED: frozenset({NegotiationState.OFFERED, NegotiationState.AGREED,
                                           NegotiationState.TERMINATED}),
    NegotiationState.OFFERED: frozenset({NegotiationState.REQUESTED, NegotiationState.ACCEPTED,
                                         NegotiationState.TERMINATED}),
    NegotiationState.ACCEPTED: frozenset({NegotiationState.AGREED, NegotiationState.TERMINATED}),
    NegotiationState.AGREED: frozenset({NegotiationState.VERIFIED, NegotiationState.TERMINATED}),
    NegotiationState.VERIFIED: frozenset({NegotiationState.FINALIZED, NegotiationState.TERMINATED}),
    NegotiationState.FINALIZED: frozenset(),
    NegotiationState.TERMINATED: frozenset(),
}


class TransferState(str, Enum):
    REQUESTED = "REQUESTED"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"


TRANSFER_TRANSITIONS: dict[TransferState | None, frozenset[TransferState]] = {
    None: frozenset({TransferState.REQUESTED}),
    TransferState.REQUESTED: frozenset({TransferState.STARTED, TransferState.TERMINATED}),
    TransferState.STARTED: frozenset({TransferState.SUSPENDED, TransferState.COMPLETED, TransferState.TERMINATED}),
    TransferState.SUSPENDED: frozenset({TransferState.STARTED, TransferState.TERMINATED}),
    TransferState.COMPLETED: frozenset(),
    TransferState.TERMINATED: frozenset(),
}


def can_transition(current: str | None, target: str, table: dict = NEGOTIATION_TRANSITIONS) -> bool:
    enum = NegotiationState if table is NEGOTIATION_TRANSITIONS else TransferState
    cur = enum(current) if current is not None else None
    return enum(target) in table[cur]


def check_negotiation(current: str | None, target: str) -> NegotiationState:
    """The target state, or Conflict ``invalid_transition`` when DSP does not allow the move."""
    if not can_transition(current, target, NEGOTIATION_TRANSITIONS):
        raise Conflict(f"A negotiation in state {current or '(new)'} cannot move to {target}.",
                       code="invalid_transition", extra={"state": current, "target": target})
    return NegotiationState(target)


def check_transfer(current: str | None, target: str) -> TransferState:
    if not can_transition(current, target, TRANSFER_TRANSITIONS):
        raise Conflict(f"A transfer process in state {current or '(new)'} cannot move to {target}.",
                       code="invalid_transition", extra={"state": current, "target": target})
    return TransferState(target)
