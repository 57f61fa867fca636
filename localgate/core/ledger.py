"""The double-entry wallet ledger: accounts, balanced entries, holds, hash chain.

Every change of money is one entry whose postings sum to zero per currency.
An account's balance is the sum of its postings. Accounts:

- ``wallet:<id>``   money in a wallet that is free to use (its *available* part)
- ``hold:<id>``     money of that wallet reserved for requests in flight (*held*)
- ``usage:<id>``    what the wallet has paid for model usage
- ``funding:<provider>``  where top-ups come from (goes negative as money arrives)
- ``refund:<provider>``   where refunded money goes
- ``adjustment``    the other side of manual corrections

A wallet's *balance* is ``wallet:<id> + hold:<id>``; *held* is ``hold:<id>``;
*available* is ``wallet:<id>``, which never goes below zero. Each entry
concerns at most one wallet, and records how it moved that wallet's balance
and held amount, so a wallet's ledger reads as a statement.

Entries are append-only: a correction is a reversing entry. Each entry carries
the hash of the previous one, so editing any stored entry breaks the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from localgate.errors import HoldClosed, LedgerError, UnbalancedEntry

GENESIS_HASH = "0" * 64

ENTRY_KINDS = (
    "topup",  # funding -> wallet
    "hold",  # wallet -> hold
    "settle",  # hold -> usage (+ the unused rest back to the wallet)
    "release",  # hold -> wallet
    "adjustment",  # adjustment <-> wallet
    "refund",  # wallet -> refund
    "reversal",  # the negation of an earlier entry
)


def wallet_account(wallet_id: str) -> str:
    return f"wallet:{wallet_id}"


def hold_account(wallet_id: str) -> str:
    return f"hold:{wallet_id}"


def usage_account(wallet_id: str) -> str:
    return f"usage:{wallet_id}"


def funding_account(provider: str) -> str:
    return f"funding:{provider}"


def refund_account(provider: str) -> str:
    return f"refund:{provider}"


ADJUSTMENT_ACCOUNT = "adjustment"


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    currency: str
    amount: int  # micros; positive raises the account's balance


@dataclass(frozen=True)
class EntryDraft:
    """An entry before it is stored: the store adds id, time and hashes."""

    kind: str
    wallet_id: str | None
    currency: str
    postings: tuple[Posting, ...]
    memo: str = ""
    idempotency_key: str | None = None
    reverses_id: int | None = None
    hold_id: str | None = None
    receipt_id: str | None = None
    topup_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENTRY_KINDS:
            raise LedgerError(f"unknown entry kind {self.kind!r}")
        check_balanced(self.postings)
        for text in (self.memo, self.idempotency_key):
            if text is not None and not _is_unicode(text):
                # Its hash is over UTF-8, which a lone surrogate cannot be written in.
                raise LedgerError(f"entry text is not valid Unicode: {text[:60]!r}")
        if self.wallet_id is not None:
            for posting in self.postings:
                name, _, owner = posting.account.partition(":")
                if name in ("wallet", "hold") and owner != self.wallet_id:
                    raise LedgerError(
                        f"entry for wallet {self.wallet_id!r} posts to {posting.account!r}"
                    )

    def wallet_deltas(self) -> tuple[int, int]:
        """How this entry moves its wallet's (balance, held)."""
        if self.wallet_id is None:
            return 0, 0
        free = sum(p.amount for p in self.postings if p.account == wallet_account(self.wallet_id))
        held = sum(p.amount for p in self.postings if p.account == hold_account(self.wallet_id))
        return free + held, held


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored; ``hash`` covers every field and the previous hash."""

    id: int
    created_at: str
    draft: EntryDraft
    balance_after: int
    held_after: int
    prev_hash: str
    hash: str = field(default="")


@dataclass(frozen=True, slots=True)
class WalletBalance:
    wallet_id: str
    currency: str
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_balanced(postings: Sequence[Posting]) -> None:
    """Refuse entries that do not sum to zero per currency, or carry no money."""
    if not postings:
        raise UnbalancedEntry("an entry needs at least two postings")
    sums: dict[str, int] = defaultdict(int)
    for posting in postings:
        if isinstance(posting.amount, bool) or not isinstance(posting.amount, int):
            raise UnbalancedEntry(f"posting amount must be integer micros: {posting.amount!r}")
        sums[posting.currency] += posting.amount
    bad = {cur: total for cur, total in sums.items() if total != 0}
    if bad:
        raise UnbalancedEntry(f"postings do not balance: {bad}")


def entry_hash(
    prev_hash: str,
    entry_id: int,
    created_at: str,
    draft: EntryDraft,
    balance_after: int,
    held_after: int,
) -> str:
    """sha256 over a canonical JSON of the entry, chained to the previous hash."""
    body = [
        prev_hash,
        entry_id,
        created_at,
        draft.kind,
        draft.wallet_id,
        draft.currency,
        draft.memo,
        draft.idempotency_key,
        draft.reverses_id,
        draft.hold_id,
        draft.receipt_id,
        draft.topup_id,
        balance_after,
        held_after,
        [[p.account, p.currency, p.amount] for p in draft.postings],
    ]
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# -- the entries a wallet's life is made of -----------------------------------


def topup_entry(
    wallet_id: str,
    currency: str,
    amount: int,
    provider: str,
    *,
    topup_id: str | None = None,
    idempotency_key: str | None = None,
    memo: str = "",
) -> EntryDraft:
    _positive(amount, "top-up amount")
    return EntryDraft(
        "topup",
        wallet_id,
        currency,
        (
            Posting(funding_account(provider), currency, -amount),
            Posting(wallet_account(wallet_id), currency, amount),
        ),
        memo=memo or f"top-up via {provider}",
        topup_id=topup_id,
        idempotency_key=idempotency_key,
    )


def adjustment_entry(
    wallet_id: str,
    currency: str,
    amount: int,
    reason: str,
    *,
    idempotency_key: str | None = None,
) -> EntryDraft:
    if amount == 0:
        raise LedgerError("an adjustment of zero moves no money")
    if not reason.strip():
        raise LedgerError("an adjustment needs a reason")
    return EntryDraft(
        "adjustment",
        wallet_id,
        currency,
        (
            Posting(ADJUSTMENT_ACCOUNT, currency, -amount),
            Posting(wallet_account(wallet_id), currency, amount),
        ),
        memo=reason.strip(),
        idempotency_key=idempotency_key,
    )


def hold_entry(
    wallet_id: str, currency: str, amount: int, hold_id: str, *, receipt_id: str | None = None
) -> EntryDraft:
    _positive(amount, "hold amount")
    return EntryDraft(
        "hold",
        wallet_id,
        currency,
        (
            Posting(wallet_account(wallet_id), currency, -amount),
            Posting(hold_account(wallet_id), currency, amount),
        ),
        memo="hold for a request in flight",
        hold_id=hold_id,
        receipt_id=receipt_id,
        idempotency_key=f"hold:{hold_id}",
    )


def settle_entry(
    wallet_id: str,
    currency: str,
    held: int,
    charge: int,
    hold_id: str,
    *,
    receipt_id: str | None = None,
    memo: str = "",
) -> EntryDraft:
    """Close a hold: ``charge`` goes to usage, the rest returns to the wallet.

    ``charge`` may exceed ``held`` only by what the wallet has free; the
    store checks that the wallet account stays non-negative.
    """
    _positive(held, "held amount")
    if charge < 0:
        raise LedgerError("a charge cannot be negative")
    if charge == 0:
        return release_entry(
            wallet_id,
            currency,
            held,
            hold_id,
            reason=memo or "nothing to charge",
            receipt_id=receipt_id,
        )
    postings = [Posting(hold_account(wallet_id), currency, -held)]
    if held != charge:
        postings.append(Posting(wallet_account(wallet_id), currency, held - charge))
    postings.append(Posting(usage_account(wallet_id), currency, charge))
    return EntryDraft(
        "settle",
        wallet_id,
        currency,
        tuple(postings),
        memo=memo or "usage charge",
        hold_id=hold_id,
        receipt_id=receipt_id,
        idempotency_key=f"close:{hold_id}",
    )


def release_entry(
    wallet_id: str,
    currency: str,
    held: int,
    hold_id: str,
    *,
    reason: str,
    receipt_id: str | None = None,
) -> EntryDraft:
    _positive(held, "held amount")
    return EntryDraft(
        "release",
        wallet_id,
        currency,
        (
            Posting(hold_account(wallet_id), currency, -held),
            Posting(wallet_account(wallet_id), currency, held),
        ),
        memo=reason,
        hold_id=hold_id,
        receipt_id=receipt_id,
        idempotency_key=f"close:{hold_id}",
    )


def refund_entry(
    wallet_id: str,
    currency: str,
    amount: int,
    provider: str,
    *,
    topup_id: str | None = None,
    idempotency_key: str | None = None,
    memo: str = "",
) -> EntryDraft:
    _positive(amount, "refund amount")
    return EntryDraft(
        "refund",
        wallet_id,
        currency,
        (
            Posting(wallet_account(wallet_id), currency, -amount),
            Posting(refund_account(provider), currency, amount),
        ),
        memo=memo or f"refund via {provider}",
        topup_id=topup_id,
        idempotency_key=idempotency_key,
    )


def reversal_of(entry: StoredEntry, reason: str) -> EntryDraft:
    """The entry that undoes ``entry``: every posting negated."""
    if entry.draft.kind in ("hold", "settle", "release"):
        # Holds follow their own life cycle; reversing one would orphan it.
        raise HoldClosed("hold, settle and release entries are not reversed by hand")
    if entry.draft.kind == "reversal":
        raise LedgerError(f"entry {entry.id} is itself a reversal")
    d = entry.draft
    return EntryDraft(
        "reversal",
        d.wallet_id,
        d.currency,
        tuple(Posting(p.account, p.currency, -p.amount) for p in d.postings),
        memo=reason or f"reversal of entry {entry.id}",
        reverses_id=entry.id,
        receipt_id=d.receipt_id,
        topup_id=d.topup_id,
        idempotency_key=f"reverse:{entry.id}",
    )


def _positive(amount: int, what: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise LedgerError(f"{what} must be a positive number of micros, got {amount!r}")
