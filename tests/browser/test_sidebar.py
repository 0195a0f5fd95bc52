"""The agent's sidebar in a real browser (issue 5): what an agent sees and does.

What must hold: an agent signs in as themselves; a ringing call pops the right customer
on the right agent's page and on no one else's; a note written by the agent who had the
call is on the next agent's page after a transfer, and edits refresh live; a stale edit
shows a conflict instead of overwriting; a dropped connection comes back by itself and
shows what was missed, without losing or doubling anything; an ended call's card stays
until a disposition is saved; a supervisor sees every agent's state and call.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    ENDPOINT,
    PASSWORD,
    Backend,
    CallScript,
    Sidebars,
    call_document,
)
from tests.waiting import until

pytestmark = pytest.mark.browser

_playwright = pytest.importorskip(
    "playwright.async_api",
    reason="the playwright package is not installed (pip install -e '.[test]')",
)
expect = _playwright.expect
expect.set_options(timeout=10_000)  # a loaded test machine is slower than a desk

ALICE = ENDPOINT["alice"]
BOB = ENDPOINT["bob"]


async def ring(backend: Backend, call: CallScript, agent: str, **document: Any) -> None:
    """The route made the call's data, then the queue rang ``agent``."""
    await backend.create_call(call_document(call.call_id, **document))
    await backend.publish(call.ringing(agent))


async def saved_note(backend: Backend, call_id: str, by: str) -> str | None:
    notes = (await backend.document(call_id))["notes"]
    return next((n["text"] for n in notes if n["by"] == by), None)


# -- signing in --------------------------------------------------------------------------


async def test_sign_in_with_the_keyboard_and_stay_signed_in(sidebars: Sidebars) -> None:
    page = await sidebars.blank()
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    await expect(page.get_by_label("Username")).to_be_focused()

    await page.keyboard.type("alice")
    await page.keyboard.press("Tab")
    await page.keyboard.type("not the password")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("login-error")).to_have_text("Wrong username or password.")
    assert await page.evaluate("sessionStorage.length") == 0

    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("agent-name")).to_have_text("Alice Martin")
    await expect(page.get_by_test_id("agent-endpoint")).to_have_text("2001")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("connection")).to_have_text("Connected")
    await expect(page.get_by_test_id("idle")).to_be_visible()
    # The token is the tab's: in sessionStorage, never in localStorage.
    assert await page.evaluate("JSON.parse(sessionStorage.getItem('cti.session')).token")
    assert "token" not in (await page.evaluate("JSON.stringify(localStorage)"))

    await page.reload()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("login-form")).to_be_hidden()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('cti.session')") is None


# -- the pop -----------------------------------------------------------------------------


async def test_a_ringing_call_pops_the_caller_on_that_agents_page_only(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    bob = await sidebars.signed_in("bob")
    call = CallScript()

    await ring(
        backend,
        call,
        ALICE,
        ivr={"account": "A0000002", "intent": "billing"},
        notes=[{"by": "ivr-bot", "text": "Caller pressed 2 twice.", "at": "2025-11-23T09:59Z"}],
    )

    card = alice.get_by_test_id("call-card")
    await expect(card).to_have_count(1)
    await expect(card).to_have_attribute("data-call-key", call.call_id)
    await expect(card.get_by_test_id("call-phase")).to_have_text("Ringing")
    await expect(card.get_by_test_id("customer-name")).to_have_text("Alan Turing")
    await expect(card.get_by_test_id("customer-tier")).to_have_text("Gold")
    await expect(card.get_by_test_id("customer-status")).to_have_text("Active")
    await expect(card.get_by_test_id("customer-account")).to_have_text("A0000002")
    await expect(card.get_by_test_id("call-line")).to_have_text("5550100 · support")
    await expect(card.get_by_test_id("routing-rule")).to_contain_text("gold")
    await expect(card.get_by_test_id("ivr")).to_contain_text("Intent")
    await expect(card.get_by_test_id("ivr")).to_contain_text("billing")
    await expect(card.get_by_test_id("earlier-notes")).to_contain_text("Caller pressed 2 twice.")
    await expect(alice.get_by_test_id("pop-announcer")).to_contain_text("Alan Turing")
    await expect(alice).to_have_title("Ringing: Alan Turing — CTI sidebar")

    # Bob's page: his own call pops, Alice's never does (nor reaches his socket).
    other = CallScript()
    await ring(backend, other, BOB, customer=None, ani="+15550001111")
    await expect(bob.get_by_test_id("call-card")).to_have_count(1)
    await expect(bob.get_by_test_id("call-card")).to_have_attribute("data-call-key", other.call_id)
    await expect(bob.get_by_test_id("customer-name")).to_have_text("Unknown caller")
    await expect(bob.get_by_test_id("caller-ani")).to_have_text("+15550001111")
    bob_keys = {f["event"]["call_key"] for f in sidebars.frames[bob] if f.get("type") == "event"}
    assert bob_keys == {other.call_id}

    # Answered: the card says so and offers call control.
    await backend.publish(call.connected(ALICE))
    await expect(card.get_by_test_id("call-phase")).to_have_text("On call")
    await expect(card.get_by_test_id("transfer-toggle")).to_be_visible()
    await expect(card.get_by_test_id("hangup")).to_be_visible()


async def test_a_call_answered_elsewhere_leaves_the_page(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    await ring(backend, call, ALICE)
    await expect(alice.get_by_test_id("call-card")).to_have_count(1)
    await backend.publish(call.ring_stopped(ALICE))
    await expect(alice.get_by_test_id("call-card")).to_have_count(0)
    await expect(alice.get_by_test_id("idle")).to_be_visible()


# -- notes follow the call ---------------------------------------------------------------


async def test_a_note_follows_the_call_to_the_next_agent_and_edits_refresh_live(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    bob = await sidebars.signed_in("bob")
    call = CallScript()
    await ring(backend, call, ALICE)
    await backend.publish(call.connected(ALICE))

    card = alice.get_by_test_id("call-card")
    await card.get_by_label("Your note").fill("Wants to move the gold plan to a new address.")
    await expect(card.get_by_test_id("save-status")).to_contain_text("All changes saved")
    assert await saved_note(backend, call.call_id, "alice") == (
        "Wants to move the gold plan to a new address."
    )

    # Alice transfers (blind) to Bob: her leg leaves, his rings and connects.
    await backend.publish(call.transferred(ALICE, "2002"), call.left(ALICE))
    await backend.publish(call.ringing(BOB), call.connected(BOB))

    bob_card = bob.get_by_test_id("call-card")
    await expect(bob_card.get_by_test_id("customer-name")).to_have_text("Alan Turing")
    note = bob_card.get_by_test_id("note")
    await expect(note.get_by_test_id("note-by")).to_have_text("alice")
    await expect(note.get_by_test_id("note-text")).to_have_text(
        "Wants to move the gold plan to a new address."
    )
    await expect(bob_card.get_by_label("Your note")).to_have_value("")

    # Alice's card: transferred away, nothing more is asked of her.
    await expect(card.get_by_test_id("call-phase")).to_have_text("Transferred")
    await expect(card.get_by_test_id("transfers")).to_contain_text("to 2002")
    await expect(card.get_by_test_id("done")).to_be_enabled()

    # Bob writes: Alice's still-open card shows it without a reload (data_changed).
    await bob_card.get_by_label("Your note").fill("Address changed; confirmation sent.")
    await expect(card.get_by_test_id("earlier-notes")).to_contain_text(
        "Address changed; confirmation sent."
    )
    await expect(card.get_by_label("Your note")).to_have_value(
        "Wants to move the gold plan to a new address."
    )


# -- conflicts ---------------------------------------------------------------------------


async def hold_first_save(page: Any) -> tuple[asyncio.Future[None], asyncio.Event]:
    """Hold the page's first PATCH until released, so that a test can edit the call
    through the API in between: the page's save then arrives with a stale version."""
    arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()
    patches = 0

    async def route(route: Any) -> None:
        nonlocal patches
        if route.request.method == "PATCH":
            patches += 1
            if patches == 1:
                arrived.set_result(None)
                await release.wait()
        await route.continue_()

    await page.route("**/api/calls/*", route)
    return arrived, release


async def test_a_stale_edit_shows_a_conflict_instead_of_overwriting(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    # Bob had the call first and passed it to Alice.
    await ring(backend, call, BOB)
    await backend.publish(call.connected(BOB), call.transferred(BOB, "2001"), call.left(BOB))
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("customer-name")).to_have_text("Alan Turing")

    arrived, release = await hold_first_save(alice)
    await card.get_by_label("Your note").fill("Refund agreed for March.")
    await card.get_by_label("Disposition").fill("Resolved")
    await asyncio.wait_for(arrived, 10)

    # Meanwhile, through the API: Bob sets the disposition, and Alice's own note is
    # rewritten from another tab of hers.
    bob_token, alice_token = await backend.token("bob"), await backend.token("alice")
    status, body = await backend.api(
        "PATCH",
        f"/api/calls/{call.call_id}",
        bob_token,
        {"version": 1, "change": {"disposition": "Escalated"}},
    )
    assert status == 200, body
    status, body = await backend.api(
        "PATCH",
        f"/api/calls/{call.call_id}",
        alice_token,
        {"version": 2, "change": {"note": "Caller disputes the March invoice."}},
    )
    assert status == 200, body
    release.set()

    conflict = card.get_by_test_id("conflict")
    await expect(conflict).to_be_visible()
    await expect(conflict).to_contain_text("alice")
    await expect(conflict.get_by_test_id("conflict-theirs")).to_have_text(
        "Caller disputes the March invoice."
    )
    await expect(conflict.get_by_test_id("conflict-mine")).to_have_text("Refund agreed for March.")
    await expect(conflict.get_by_test_id("conflict-theirs-disposition")).to_have_value("Escalated")
    await expect(card.get_by_test_id("save-status")).to_contain_text("resolve the conflict")
    # Nothing was overwritten behind the agent's back.
    document = await backend.document(call.call_id)
    assert document["disposition"] == "Escalated"
    assert await saved_note(backend, call.call_id, "alice") == "Caller disputes the March invoice."

    # The agent merges the note, keeps Bob's disposition, and saves.
    merged = conflict.get_by_test_id("conflict-merge")
    await expect(merged).to_have_value(
        "Caller disputes the March invoice.\nRefund agreed for March."
    )
    await merged.fill("Caller disputes the March invoice; refund agreed.")
    await conflict.get_by_test_id("conflict-theirs-disposition").check()
    await conflict.get_by_test_id("conflict-save").click()

    await expect(conflict).to_be_hidden()
    await expect(card.get_by_test_id("save-status")).to_contain_text("All changes saved")
    await expect(card.get_by_label("Your note")).to_have_value(
        "Caller disputes the March invoice; refund agreed."
    )
    await expect(card.get_by_label("Disposition")).to_have_value("Escalated")
    document = await backend.document(call.call_id)
    assert document["disposition"] == "Escalated"
    assert await saved_note(backend, call.call_id, "alice") == (
        "Caller disputes the March invoice; refund agreed."
    )


async def test_a_colleagues_own_note_saved_meanwhile_is_kept_next_to_ours(
    sidebars: Sidebars, backend: Backend
) -> None:
    """Notes are one per writer: a colleague's note saved at the same time is not in the
    way of ours, so both are kept (and the agent is told), with no conflict to resolve."""
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    await ring(backend, call, BOB)
    await backend.publish(call.connected(BOB), call.transferred(BOB, "2001"), call.left(BOB))
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("customer-name")).to_have_text("Alan Turing")

    arrived, release = await hold_first_save(alice)
    await card.get_by_label("Your note").fill("Checked the address.")
    await asyncio.wait_for(arrived, 10)
    status, body = await backend.api(
        "PATCH",
        f"/api/calls/{call.call_id}",
        await backend.token("bob"),
        {"version": 1, "change": {"note": "Transferred: billing question."}},
    )
    assert status == 200, body
    release.set()

    await expect(card.get_by_test_id("save-status")).to_contain_text("All changes saved")
    await expect(card.get_by_test_id("notice")).to_contain_text("both kept")
    await expect(card.get_by_test_id("conflict")).to_be_hidden()
    await expect(card.get_by_test_id("earlier-notes")).to_contain_text(
        "Transferred: billing question."
    )
    assert await saved_note(backend, call.call_id, "alice") == "Checked the address."
    assert await saved_note(backend, call.call_id, "bob") == "Transferred: billing question."


# -- the connection ----------------------------------------------------------------------


async def test_a_dropped_network_reconnects_and_shows_the_missed_pop(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    frames = sidebars.frames[alice]
    earlier = CallScript()
    await ring(backend, earlier, ALICE)
    await backend.publish(earlier.ring_stopped(ALICE))
    await until(lambda: any(f.get("event", {}).get("event") == "ring_stopped" for f in frames))

    await alice.context.set_offline(True)
    connection = alice.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-state", "offline")
    await expect(connection).to_contain_text("Offline")

    call = CallScript()
    await ring(backend, call, ALICE, ivr={"intent": "move"})
    await asyncio.sleep(0.5)
    await expect(alice.get_by_test_id("call-card")).to_have_count(0)

    await alice.context.set_offline(False)
    await expect(connection).to_have_attribute("data-state", "connected")
    card = alice.get_by_test_id("call-card")
    await expect(card).to_have_count(1)
    await expect(card.get_by_test_id("customer-name")).to_have_text("Alan Turing")
    missed = alice.get_by_test_id("missed")
    await expect(missed).to_be_visible()
    await expect(missed.get_by_test_id("missed-item")).to_have_count(1)
    await expect(missed.get_by_test_id("missed-item")).to_contain_text("Alan Turing")

    # It resumed from the last entry it had: nothing missed, nothing twice.
    sockets = sidebars.sockets[alice]
    assert len(sockets) >= 2 and "after=" not in sockets[0] and "after=" in sockets[-1]
    ids = sidebars.event_ids(alice)
    assert len(ids) == len(set(ids)) == 3

    await missed.get_by_test_id("missed-dismiss").click()
    await expect(missed).to_be_hidden()


async def test_a_resume_point_trimmed_away_resynchronises_the_page(
    sidebars: Sidebars, backend: Backend
) -> None:
    """Away longer than the streams keep events: the page is told (resync), says so,
    and takes the snapshot as a new tab would: the call that rang meanwhile pops, the
    card it had stays, nothing is listed as "missed" as if it were complete."""
    from cti.calls.publisher import agent_stream

    alice = await sidebars.signed_in("alice")
    frames = sidebars.frames[alice]
    earlier = CallScript()
    await ring(backend, earlier, ALICE)
    await expect(alice.get_by_test_id("call-card")).to_have_count(1)

    await alice.context.set_offline(True)
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "offline")
    call = CallScript()
    await ring(backend, call, ALICE, ivr={"intent": "move"})
    # The retention removes everything before the new ringing: what alice saw is gone.
    newest = await backend.redis.xrevrange(agent_stream(ALICE), count=1)
    await backend.redis.xtrim(agent_stream(ALICE), minid=newest[0][0], approximate=False)

    await alice.context.set_offline(False)
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await until(lambda: any(f.get("type") == "resync" for f in frames))
    await expect(alice.get_by_test_id("banner")).to_contain_text("no longer on the server")
    cards = alice.get_by_test_id("call-card")
    await expect(cards).to_have_count(2)
    await expect(cards.get_by_test_id("customer-name").first).to_have_text("Alan Turing")
    await expect(alice.get_by_test_id("missed")).to_be_hidden()


async def test_a_server_that_drops_the_socket_is_reconnected_to(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    frames = sidebars.frames[alice]
    call = CallScript()
    await ring(backend, call, ALICE)
    await expect(alice.get_by_test_id("call-card")).to_have_count(1)

    await backend.close_sockets()
    await backend.publish(call.connected(ALICE))
    connection = alice.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-state", "connected", timeout=15_000)
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("call-phase")).to_have_text("On call")
    await expect(card).to_have_count(1)
    hellos = [f for f in frames if f.get("type") == "hello"]
    assert [h["after"] == "0-0" for h in hellos] == [True, False]  # resumed, not replayed
    ids = sidebars.event_ids(alice)
    assert len(ids) == len(set(ids)) == 2


async def test_a_fourth_sidebar_of_one_agent_is_told_why_it_is_refused(
    sidebars: Sidebars,
) -> None:
    for _ in range(3):
        await sidebars.signed_in("alice")
    fourth = await sidebars.blank()
    await fourth.get_by_label("Username").fill("alice")
    await fourth.get_by_label("Password").fill(PASSWORD)
    await fourth.get_by_label("Password").press("Enter")
    await expect(fourth.get_by_test_id("banner")).to_contain_text("3 sidebars open")
    await expect(fourth.get_by_test_id("connection")).to_have_attribute(
        "data-state", "reconnecting"
    )
    await expect(fourth.get_by_test_id("connection-retry")).to_contain_text("s")


# -- wrap-up -----------------------------------------------------------------------------


async def test_an_ended_call_stays_until_a_disposition_is_saved(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    await ring(backend, call, ALICE)
    await backend.publish(call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("call-phase")).to_have_text("On call")

    await backend.publish(call.left(ALICE), call.ended())
    await expect(card.get_by_test_id("call-phase")).to_have_text("Call ended")
    await expect(card.get_by_test_id("controls")).to_be_hidden()
    done = card.get_by_test_id("done")
    await expect(done).to_be_disabled()
    await expect(card.get_by_test_id("done-hint")).to_have_text(
        "Save a disposition to finish this call."
    )

    # A reload is not a way out: the card comes back from the stream.
    await alice.reload()
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("call-phase")).to_have_text("Call ended")
    await expect(card.get_by_test_id("done")).to_be_disabled()

    disposition = card.get_by_label("Disposition")
    await disposition.fill("Resolved!")
    await expect(card.get_by_test_id("disposition-error")).to_be_visible()
    await disposition.fill("Resolved")
    await expect(card.get_by_test_id("disposition-error")).to_be_hidden()
    await expect(card.get_by_test_id("done")).to_be_enabled()
    assert (await backend.document(call.call_id))["disposition"] == "Resolved"

    await card.get_by_test_id("done").click()
    await expect(alice.get_by_test_id("call-card")).to_have_count(0)
    await expect(alice.get_by_test_id("idle")).to_be_visible()
    await alice.reload()
    await expect(alice.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await asyncio.sleep(0.8)  # the replay is over
    await expect(alice.get_by_test_id("call-card")).to_have_count(0)


# -- call control and presence -----------------------------------------------------------


async def test_transfer_hang_up_and_pause_reach_asterisk(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    await ring(backend, call, ALICE)
    await backend.publish(call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("call-phase")).to_have_text("On call")
    actions = backend.asterisk.actions

    await card.get_by_test_id("transfer-toggle").click()
    target = card.get_by_label("Transfer to")
    await expect(target).to_be_focused()
    await target.fill("bad target!")
    await card.get_by_test_id("transfer-attended").click()
    await expect(card.get_by_test_id("action-status")).to_contain_text("Enter a queue")
    assert actions == []

    await target.fill("billing")
    await card.get_by_test_id("transfer-attended").click()
    await expect(card.get_by_test_id("transfer-complete")).to_be_visible()
    await expect(card.get_by_test_id("consult-info")).to_contain_text("billing")
    await card.get_by_test_id("transfer-cancel").click()
    await expect(card.get_by_test_id("transfer-toggle")).to_be_visible()

    await card.get_by_test_id("transfer-toggle").click()
    await target.fill("2003")
    await card.get_by_test_id("transfer-attended").click()
    await card.get_by_test_id("transfer-complete").click()
    await expect(card.get_by_test_id("action-status")).to_have_text("Transfer completed.")

    await card.get_by_test_id("transfer-toggle").click()
    await target.fill("sales")
    await target.press("Enter")  # Enter is a blind transfer
    await expect(card.get_by_test_id("action-status")).to_have_text("Transferred to sales.")

    await card.get_by_test_id("hangup").click()
    await card.get_by_test_id("hangup-confirm").click()
    await expect(card.get_by_test_id("action-status")).to_have_text("Hung up.")
    assert [name for name, _ in actions] == [
        "attended_transfer",
        "cancel_transfer",
        "attended_transfer",
        "complete_transfer",
        "blind_transfer",
        "hangup",
    ]
    assert actions[0][1] == {"call": call.call_id, "agent": ALICE, "to": "billing"}
    assert actions[4][1] == {"call": call.call_id, "agent": ALICE, "to": "sales"}

    await alice.get_by_test_id("pause-toggle").click()
    await alice.get_by_label("Reason").select_option("Lunch")
    await alice.get_by_test_id("pause-confirm").click()
    await expect(alice.get_by_test_id("pause-state")).to_have_text("Paused · Lunch")
    await alice.get_by_test_id("pause-toggle").click()
    await expect(alice.get_by_test_id("pause-state")).to_have_text("Available")
    assert actions[-2:] == [
        ("QueuePause", {"Interface": ALICE, "Paused": "true", "Reason": "lunch"}),
        ("QueuePause", {"Interface": ALICE, "Paused": "false"}),
    ]


async def test_a_call_that_skipped_the_route_pops_without_data_and_can_be_hung_up(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    call = CallScript(routed=False)
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card).to_have_attribute("data-call-key", call.call_key)
    await expect(card.get_by_test_id("load-state")).to_contain_text("did not go through routing")
    await card.get_by_test_id("hangup").click()
    await card.get_by_test_id("hangup-confirm").click()
    await expect(card.get_by_test_id("action-status")).to_have_text("Hung up.")
    assert backend.asterisk.actions == [("hangup", {"call": call.call_key, "agent": ALICE})]
    await backend.publish(call.left(ALICE), call.ended())
    await expect(card.get_by_test_id("done")).to_be_enabled()
    await card.get_by_test_id("done").click()
    await expect(alice.get_by_test_id("idle")).to_be_visible()


# -- supervisors -------------------------------------------------------------------------


async def test_a_supervisor_sees_every_agents_state_and_call(
    sidebars: Sidebars, backend: Backend
) -> None:
    carol = await sidebars.signed_in("carol")
    await expect(carol.get_by_test_id("team")).to_be_visible()
    await expect(carol.get_by_test_id("team-row")).to_have_count(3)

    call = CallScript()
    await ring(backend, call, ALICE)
    await backend.publish(call.connected(ALICE))
    row = carol.locator(f'[data-testid="team-row"][data-endpoint="{ALICE}"]')
    await expect(row.get_by_test_id("team-state")).to_have_text("On call")
    await expect(row.get_by_test_id("team-call")).to_have_text("Alan Turing · gold")
    bob_row = carol.locator(f'[data-testid="team-row"][data-endpoint="{BOB}"]')
    await expect(bob_row.get_by_test_id("team-state")).to_have_text("Idle")
    await expect(carol.get_by_test_id("feed")).to_contain_text("connected with Alan Turing")
    # Another agent's call is not the supervisor's own pop.
    await expect(carol.get_by_test_id("call-card")).to_have_count(0)


# -- the picture -------------------------------------------------------------------------


async def test_screenshot_of_a_popped_gold_call(
    sidebars: Sidebars, backend: Backend, tmp_path: Path
) -> None:
    """The sidebar as an agent sees it (docs/sidebar.png when ``CTI_SCREENSHOT`` names it:
    tools/screenshot_sidebar.py)."""
    await backend.pool.execute(
        """INSERT INTO interactions (call_id, routed_at, channel, uniqueid, ani, dnis,
               customer_id, service, route, queue, priority, rule, tier, decision_us)
           VALUES (gen_random_uuid(), now() - interval '3 days', 'PJSIP/trunk-1', '1.1',
                   '+12120000002', '5550300', 2, 'billing', 'queue', 'billing', 10, 'gold',
                   'gold', 900),
                  (gen_random_uuid(), now() - interval '12 days', 'PJSIP/trunk-2', '1.2',
                   '+12120000002', '5550100', 2, 'support', 'queue', 'support', 10, 'gold',
                   'gold', 850)"""
    )
    alice = await sidebars.signed_in("alice")
    call = CallScript()
    await backend.create_call(
        call_document(
            call.call_id,
            ivr={"account": "A0000002", "intent": "billing", "language": "en"},
            notes=[
                {
                    "by": "bob",
                    "text": "Disputes the March invoice (2 × the roaming fee). "
                    "Verified identity; passing to billing.",
                    "at": (datetime.now(UTC) - timedelta(minutes=4)).isoformat(),
                }
            ],
        )
    )
    await backend.publish(call.ringing(BOB), call.connected(BOB))
    await backend.publish(call.transferred(BOB, "2001"), call.left(BOB))
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    card = alice.get_by_test_id("call-card")
    await expect(card.get_by_test_id("customer-name")).to_have_text("Alan Turing")
    await expect(card.get_by_test_id("recent-item")).to_have_count(2)
    await card.get_by_label("Your note").fill("Confirmed the double charge; refund requested.")
    await expect(card.get_by_test_id("save-status")).to_contain_text("All changes saved")
    await card.get_by_label("Your note").blur()
    await alice.evaluate("document.activeElement.blur()")
    await asyncio.sleep(0.3)  # the pop-in animation is over

    target = Path(os.environ.get("CTI_SCREENSHOT") or tmp_path / "sidebar.png")
    png = await alice.screenshot(path=str(target), full_page=False)
    assert len(png) > 10_000
