"""Hold -> settle, as writer jobs: the money side of one gateway request.

``begin`` runs in the writer before the upstream call: it checks the key's
budget and the wallet, decides the hold (the request's worst case), places it
and stores the pending receipt — one transaction. ``finish`` runs after the
call: it settles (charge the actual cost, release the rest) or releases the
hold, adds the charge to the key's spend and stores the finished receipt — one
transaction. Both read balances inside their transaction, so no interleaving
of concurrent requests can overdraw a wallet or a budget.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from localgate.core import keys as core_keys
from localgate.core.catalog import Route
from localgate.core.keys import KeyPolicy
from localgate.core.pricing import affordable_output, worst_case_micros
from localgate.core.receipts import Receipt
from localgate.errors import InsufficientFunds, RateLimited
from localgate.money import format_money
from localgate.store import keys as key_store
from localgate.store import ledger as ledger_store
from localgate.store import receipts as receipt_store
from localgate.store.db import utcnow

# Below this many affordable output tokens a request is refused rather than
# sent with a uselessly small max_tokens.
MIN_USEFUL_OUTPUT = 16


@dataclass(frozen=True)
class HoldPlan:
    route: Route  # the route the hold is for; the receipt names it once the hold is placed
    price_version_id: str | None
    upstream_kind: str
    wallet_id: str
    input_tokens: int
    requested_output: int | None  # the client's max tokens (times n), or None
    model_max_output: int  # the model's limit (times n)
    topup_url: str


@dataclass(frozen=True)
class HoldGrant:
    hold_id: str | None  # None on a free route: nothing held
    amount: int
    max_output: int  # output tokens the hold covers (what to send upstream if unset)
    balance: int


def begin(
    conn: sqlite3.Connection, receipt: Receipt, policy: KeyPolicy, plan: HoldPlan, owner: str
) -> HoldGrant:
    now = time.time()
    balance = ledger_store.wallet_balance(conn, plan.wallet_id)
    cur = balance.currency
    room = None
    if policy.budgets:  # most keys have none: skip the spend queries then
        spend = key_store.spend_of(conn, policy.id, cur, now)
        core_keys.check_budget(policy, cur, spend, now)
        room = core_keys.budget_room(policy, cur, spend)
    if plan.requested_output is not None:
        max_output = plan.requested_output
        amount = worst_case_micros(plan.input_tokens, max_output, plan.route.price)
    else:
        limit = balance.available if room is None else min(balance.available, room)
        max_output = min(
            plan.model_max_output, affordable_output(limit, plan.input_tokens, plan.route.price)
        )
        if max_output < min(MIN_USEFUL_OUTPUT, plan.model_max_output):
            max_output = min(MIN_USEFUL_OUTPUT, plan.model_max_output)
        amount = worst_case_micros(plan.input_tokens, max_output, plan.route.price)
    if room is not None and amount > room:
        raise RateLimited(
            f"API key {policy.label!r} has {format_money(room, cur)} left in its {cur} budget; "
            f"this request may cost up to {format_money(amount, cur)}. Lower max_tokens or "
            "raise the key's budget.",
            code="budget_exceeded",
            retry_after=60,
        )
    if amount > balance.available:
        raise InsufficientFunds.for_wallet(
            plan.wallet_id,
            cur,
            needed=amount,
            available=balance.available,
            topup_url=plan.topup_url,
            purpose="needed for this request's hold (its worst-case cost)",
        )
    # A free route (zero prices) holds nothing: there is nothing to reserve or settle.
    hold_id = (
        ledger_store.place_hold(
            conn, plan.wallet_id, amount, owner=owner, receipt_id=receipt.id, key_id=policy.id
        )
        if amount
        else None
    )
    receipt.hold_granted(
        plan.route,
        plan.price_version_id,
        upstream_kind=plan.upstream_kind,
        hold_id=hold_id,
        amount=amount,
        wallet_id=plan.wallet_id,
        currency=cur,
        balance=balance.balance,
    )
    receipt_store.save(conn, receipt)
    return HoldGrant(hold_id, amount, max_output, balance.balance)


def switch(
    conn: sqlite3.Connection,
    receipt: Receipt,
    policy: KeyPolicy,
    plan: HoldPlan,
    owner: str,
    reason: str,
) -> HoldGrant:
    """Fallback to another route: release the old hold, place one for the new route.

    The receipt is changed only once the new hold is placed (``begin`` does it
    last): if this job fails, the writer rolls the release back too, and the
    receipt still names the hold that is open.
    """
    if receipt.hold_id is not None:
        ledger_store.release_hold(conn, receipt.hold_id, reason=reason, receipt_id=receipt.id)
    return begin(conn, receipt, policy, plan, owner)


def finish(conn: sqlite3.Connection, receipt: Receipt, charge: int, memo: str) -> Receipt:
    """Settle or release the receipt's hold and store the finished receipt."""
    receipt.finished_at = utcnow()
    if receipt.hold_id is not None:
        if charge > receipt.hold_micros and receipt.key_id:
            charge = _within_budget(conn, receipt, charge)
        if charge > 0:
            outcome = ledger_store.settle_hold(
                conn, receipt.hold_id, charge, receipt_id=receipt.id, memo=memo
            )
            entry, charged = outcome.entry, outcome.charged
            if outcome.capped:
                receipt.add_policy_note("charge capped at what the wallet held")
        else:
            entry = ledger_store.release_hold(
                conn, receipt.hold_id, reason=memo, receipt_id=receipt.id
            )
            charged = 0
        receipt.booked(entry_id=entry.id, charged=charged, balance_after=entry.balance_after)
        if receipt.key_id and charged:
            key_store.add_spend(conn, receipt.key_id, receipt.currency or "", charged, time.time())
    elif receipt.route_id is not None:  # a free route: nothing held, nothing charged
        receipt.balance_after_micros = receipt.balance_before_micros
    if receipt.key_id:
        key_store.touch(conn, receipt.key_id)
    receipt_store.save(conn, receipt)
    return receipt


def _within_budget(conn: sqlite3.Connection, receipt: Receipt, charge: int) -> int:
    """A charge above the hold (the upstream used more than it was allowed) may
    take only what the key's budget has left: a key never spends past its budget."""
    policy = key_store.policy_from_row(key_store.get_key_row(conn, receipt.key_id or ""))
    spend = key_store.spend_of(conn, policy.id, receipt.currency or "", time.time())
    room = core_keys.budget_room(policy, receipt.currency or "", spend)  # this hold counts as spent
    if room is None or charge <= receipt.hold_micros + room:
        return charge
    receipt.add_policy_note("charge capped at the key's budget")
    return receipt.hold_micros + room


def record(conn: sqlite3.Connection, receipt: Receipt) -> Receipt:
    """Store a receipt that never held money (a rejection before any hold)."""
    if receipt.finished_at is None:
        receipt.finished_at = utcnow()
    if receipt.wallet_id is not None and receipt.balance_before_micros is None:
        bal = ledger_store.wallet_balance(conn, receipt.wallet_id)
        receipt.balance_before_micros = receipt.balance_after_micros = bal.balance
    receipt_store.save(conn, receipt)
    return receipt
