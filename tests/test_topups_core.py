"""The top-up state machine and fulfilment rules (core.topups), pure — plus the m003 schema."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localgate.core import topups as core
from localgate.core.topups import Dispute, Report, Topup, plan
from localgate.errors import MoneyError

USD = 1_000_000


def topup(**kw: object) -> Topup:
    base = dict(
        id="tu_1",
        wallet_id="credit",
        currency="USD",
        amount=20 * USD,
        method="card",
        provider="stripe",
        status="pending",
        reference="cs_1",
    )
    base.update(kw)
    return Topup(**base)  # type: ignore[arg-type]


def paid(amount: int = 20 * USD, currency: str = "USD", **kw: object) -> Report:
    return Report("completed", "cs_1", amount=amount, currency=currency, **kw)  # type: ignore[arg-type]


# -- the transition table ----------------------------------------------------------


def test_every_status_has_its_transitions_and_the_failures_are_final():
    assert set(core.TRANSITIONS) == set(core.STATUSES)
    for final in ("failed", "canceled", "expired"):
        assert core.TRANSITIONS[final] == frozenset()
    assert core.can_move("created", "pending") and core.can_move("pending", "completed")
    assert core.can_move("completed", "refunded") and core.can_move("disputed", "reinstated")
    assert not core.can_move("completed", "failed")
    assert not core.can_move("completed", "pending")
    assert not core.can_move("expired", "completed")


def test_a_completed_report_credits_once_with_the_reference_key():
    p = plan(topup(), paid(), available=0)
    assert [t.dst for t in p.transitions] == ["completed"]
    assert p.credit and len(p.entries) == 1
    entry = p.entries[0]
    assert entry.kind == "topup" and entry.topup_id == "tu_1"
    assert entry.idempotency_key == "topup:stripe:cs_1"
    assert {(x.account, x.amount) for x in entry.postings} == {
        ("funding:stripe", -20 * USD),
        ("wallet:credit", 20 * USD),
    }
    # The same report again, once completed: nothing more.
    again = plan(p.topup, paid(), available=20 * USD)
    assert not again.changed and not again.refused


@pytest.mark.parametrize("late", ["failed", "canceled", "expired", "pending"])
def test_a_late_report_after_completed_is_refused_not_applied(late):
    p = plan(topup(status="completed", ledger_entry_id=1), Report(late, "cs_1"), available=0)
    assert not p.transitions and not p.entries
    assert [(r.src, r.dst) for r in p.refused] == [("completed", late)]
    assert "refused" in p.refused[0].detail


@pytest.mark.parametrize("final", ["failed", "canceled", "expired"])
def test_money_after_a_final_failure_is_refused(final):
    p = plan(topup(status=final), paid(), available=0)
    assert not p.entries and p.refused and p.refused[0].dst == "completed"


@pytest.mark.parametrize(
    ("report", "why"),
    [
        (paid(amount=19 * USD), "amount mismatch"),
        (paid(currency="EUR"), "currency mismatch"),
        (Report("completed", "cs_1", amount=None, currency="USD"), "amount mismatch"),
        (Report("completed", "cs_other", amount=20 * USD, currency="USD"), "not this top-up"),
    ],
)
def test_mismatched_payments_are_refused(report, why):
    p = plan(topup(), report, available=0)
    assert not p.entries and not p.transitions
    assert why in p.refused[0].detail


def test_failures_move_and_carry_their_reason():
    p = plan(topup(), Report("failed", "cs_1", reason="card declined"), available=0)
    assert [(t.src, t.dst) for t in p.transitions] == [("pending", "failed")]
    assert p.reason == "card declined" and not p.entries


def test_an_expired_session_the_user_canceled_is_canceled():
    p = plan(topup(cancel_requested=True), Report("expired", "cs_1"), available=0)
    assert p.transitions[0].dst == "canceled"


def test_created_can_go_straight_to_any_outcome():
    for dst in ("pending", "failed", "canceled", "expired"):
        p = plan(topup(status="created"), Report(dst, "cs_1"), available=0)
        assert p.transitions[0].dst == dst
    assert plan(topup(status="created"), paid(), available=0).credit


# -- refunds and disputes -------------------------------------------------------------


def test_partial_then_full_refund_post_refund_entries_for_the_difference():
    t = topup(status="completed", ledger_entry_id=1)
    p = plan(t, paid(refunded=5 * USD), available=20 * USD)
    assert [x.dst for x in p.transitions] == ["refunded"]
    assert p.entries[0].kind == "refund" and p.entries[0].wallet_deltas() == (-5 * USD, 0)
    assert p.entries[0].idempotency_key == f"refund:stripe:cs_1:{5 * USD}"
    p2 = plan(p.topup, paid(refunded=20 * USD), available=15 * USD)
    assert p2.entries[0].wallet_deltas() == (-15 * USD, 0)
    assert p2.topup.refunded == 20 * USD and "full refund" in p2.transitions[0].detail
    # Re-reporting the same total changes nothing.
    assert not plan(p2.topup, paid(refunded=20 * USD), available=0).changed


def test_a_refund_larger_than_the_balance_takes_what_is_there_and_freezes():
    t = topup(status="completed", ledger_entry_id=1)
    p = plan(t, paid(refunded=20 * USD), available=3 * USD)
    assert p.entries[0].wallet_deltas() == (-3 * USD, 0)
    assert p.topup.shortfall == 17 * USD
    assert p.freeze_reason and p.freeze_reason.startswith("top-up tu_1")
    assert "not covered by the balance" in p.transitions[0].detail


def test_a_refund_with_nothing_left_posts_no_entry_but_records_it():
    p = plan(topup(status="completed", ledger_entry_id=1), paid(refunded=20 * USD), available=0)
    assert not p.entries and p.transitions[0].dst == "refunded" and p.topup.shortfall == 20 * USD


def test_dispute_withdraws_and_a_won_dispute_reinstates():
    t = topup(status="completed", ledger_entry_id=7)
    opened = plan(t, paid(dispute=Dispute("dp_1", 20 * USD, "open")), available=20 * USD)
    assert [x.dst for x in opened.transitions] == ["disputed"]
    withdraw = opened.entries[0]
    assert withdraw.kind == "reversal" and withdraw.reverses_id == 7
    assert withdraw.wallet_deltas() == (-20 * USD, 0)
    won = plan(opened.topup, paid(dispute=Dispute("dp_1", 20 * USD, "won")), available=0)
    assert [x.dst for x in won.transitions] == ["reinstated"]
    assert won.entries[0].kind == "topup" and won.entries[0].wallet_deltas() == (20 * USD, 0)
    assert won.entries[0].idempotency_key == "reinstate:stripe:dp_1"


def test_a_lost_dispute_is_noted_once():
    t = topup(status="completed", ledger_entry_id=7)
    opened = plan(t, paid(dispute=Dispute("dp_1", 20 * USD, "open")), available=20 * USD)
    lost = plan(opened.topup, paid(dispute=Dispute("dp_1", 20 * USD, "lost")), available=0)
    assert [(x.src, x.dst) for x in lost.transitions] == [("disputed", "disputed")]
    assert not lost.entries and "lost" in lost.transitions[0].detail
    assert not plan(
        lost.topup, paid(dispute=Dispute("dp_1", 20 * USD, "lost")), available=0
    ).changed


def test_a_won_dispute_forgives_what_the_wallet_could_not_cover():
    t = topup(status="completed", ledger_entry_id=7)
    opened = plan(t, paid(dispute=Dispute("dp_1", 20 * USD, "open")), available=8 * USD)
    assert opened.topup.shortfall == 12 * USD and opened.entries[0].wallet_deltas()[0] == -8 * USD
    won = plan(opened.topup, paid(dispute=Dispute("dp_1", 20 * USD, "won")), available=0)
    assert won.entries[0].wallet_deltas()[0] == 8 * USD
    assert won.topup.shortfall == 0


def test_shortfall_recovery_takes_from_new_money_in_order():
    drafts, left = core.shortfall_recovery(
        "credit", "USD", 10 * USD, [("tu_a", "stripe", 6 * USD, 0), ("tu_b", "sandbox", 7 * USD, 2)]
    )
    assert [d.wallet_deltas()[0] for d in drafts] == [-6 * USD, -4 * USD]
    assert [d.idempotency_key for d in drafts] == ["shortfall:tu_a:1", "shortfall:tu_b:3"]
    assert left == {"tu_a": 0, "tu_b": 3 * USD}


# -- bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "code", "error"),
    [
        (USD // 2, "USD", "amount_too_small"),
        (5001 * USD, "USD", "amount_too_large"),
        (1_234_567, "USD", "invalid_amount"),
        (4 * USD, "CNY", "amount_too_small"),
        (100 * USD + 500_000, "JPY", "invalid_amount"),
    ],
)
def test_amount_bounds_per_currency(micros, code, error):
    with pytest.raises(MoneyError) as info:
        core.check_amount(micros, code)
    assert info.value.code == error


def test_amount_bounds_messages_name_the_limit():
    with pytest.raises(MoneyError, match=r"smallest top-up in USD is \$1\.00"):
        core.check_amount(USD // 2, "USD")
    with pytest.raises(MoneyError, match=r"largest top-up in CNY is ¥35000\.00"):
        core.check_amount(40_000 * USD, "CNY")
    core.check_amount(20 * USD, "USD")
    core.check_amount(5 * USD, "CNY")


def test_methods_must_be_known_and_enabled():
    core.check_method("card", ("card",))
    with pytest.raises(MoneyError, match="unknown payment method"):
        core.check_method("paypal", core.METHODS)
    with pytest.raises(MoneyError, match="WeChat Pay is not enabled"):
        core.check_method("wechat_pay", ("card",))


# -- any order of reports ---------------------------------------------------------------

reports = st.one_of(
    st.sampled_from([Report(s, "cs_1") for s in ("pending", "failed", "canceled", "expired")]),
    st.builds(lambda a: paid(amount=a), st.sampled_from([20 * USD, 19 * USD])),
    st.builds(lambda r: paid(refunded=r), st.integers(0, 25 * USD)),
    st.builds(
        lambda s: paid(dispute=Dispute("dp_1", 20 * USD, s)),
        st.sampled_from(["open", "won", "lost"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(reports, max_size=12), st.integers(0, 30 * USD))
def test_no_sequence_of_reports_credits_twice_or_goes_negative(sequence, extra):
    t = topup()
    available = extra
    credits = 0
    for report in sequence:
        p = plan(t, report, available=available)
        for src_dst in p.transitions:
            assert src_dst.dst in core.TRANSITIONS[src_dst.src] or src_dst.dst == src_dst.src
        for entry in p.entries:
            if entry.idempotency_key == "topup:stripe:cs_1":
                credits += 1
            available += entry.wallet_deltas()[0]
            assert available >= 0
        t = replace(p.topup, ledger_entry_id=t.ledger_entry_id or (1 if p.credit else None))
    assert credits <= 1
    assert t.refunded <= t.amount
