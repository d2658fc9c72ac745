"""Contract negotiation, signatures, finalisation, revocation and the agreement checks every access
makes: one import point for callers (console, transfer, privacy). No FastAPI imports; callers pass
the authenticated ``Principal``. The logic lives in one file per idea:

* ``lookups``: the clock, lookups with party checks, the state move;
* ``negotiation``: DSP provider side (request, offer, events, termination);
* ``signatures``: agreement document, party signatures, broker countersignature;
* ``access``: revocation (and its ``ON_REVOKE`` hooks), ``require_active_agreement``;
* ``views``: negotiation/agreement views, the exported bundle;
* ``management``: the management API's shortcuts (open, offer, accept).

Tests that move the clock patch ``broker.contracts.lookups.now``. What decides each pull is the policy
engine (``broker.policy.access.decide_access``), asked by ``broker.transfer.service.decide_pull``.
"""

from __future__ import annotations

from broker.contracts.access import (ON_REVOKE, _log_refusal, policy_agreement_view,  # noqa: F401
                                     require_active_agreement, revoke)
from broker.contracts.models import Agreement, ContractNegotiation  # noqa: F401
from broker.contracts.lookups import (READ_ALL_ROLES, _utc, get_agreement, get_negotiation,  # noqa: F401
                                      list_agreements, list_negotiations, now)
from broker.contracts.management import accept_negotiation, offer_negotiation, open_negotiation  # noqa: F401
from broker.contracts.negotiation import (negotiation_event, offer_contract, request_contract,  # noqa: F401
                                          terminate)
from broker.contracts.signatures import (add_signature, agree, agreement_draft, fix_agreement,  # noqa: F401
                                         verify_agreement)
from broker.contracts.views import agreement_view, dsp_negotiation, export_bundle, negotiation_view  # noqa: F401
