"""Sign-in, a room one owns and its waiting room, in real Chromium against a real OIDC provider.

Alice signs in through the provider's login page, creates a ``trusted`` meeting in "My
meetings" and joins it (its host). Bob signs in and enters directly. Gabriel, a guest, waits in
the lobby with his preview; Alice's page chimes and shows him; she admits him and he sees and
hears the meeting. Mallory and Oscar, two more guests, are denied together ("Deny all"): their
pages say so at once, they never get a token nor any media, and knocking again at once is
refused. Then Alice renames the meeting,
makes it restricted, invites people, deletes it (Bob's meeting ends), and signs out, at the
provider too. The server runs without development mode (no /dev/token): tokens come only from
the sign-in and the waiting room.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import artefact, open_page
from tests.browser.test_room_layout import screenshot  # also the README's, on demand
from tests.support.browser import REMOTE_MEDIA, poll, tile_of
from tests.support.oidc import USERS, OidcProvider, serve_signed_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def provider():
    p = OidcProvider(users=USERS)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def server(provider, tmp_path_factory):
    s = serve_signed_in(provider, tmp_path_factory.mktemp("identity"))
    yield s
    s.stop()


def sign_in(page, sub: str) -> None:
    """Through the provider's own login page."""
    page.click("#sign-in")
    page.wait_for_selector("input[name=sub]")
    page.fill("input[name=sub]", sub)
    page.click("button[type=submit]:has-text('Authorize')")
    page.wait_for_selector("#signed-in", timeout=30000)


def test_sign_in_own_room_and_waiting_room(server, browser, provider):
    # an address that is no meeting: said in the lobby (no room without a token to enter it)
    lost = open_page(browser, f"{server.url}/r/no-such-meeting", "lost")
    lost.wait_for_selector("#sign-in")
    lost.fill("#name-input", "Lost")
    # the click asks the server for a token (a failure here says whether it ever did, and
    # what came back: once in a CI run the lobby stayed as it was for 30 s)
    with lost.expect_response(
        lambda r: r.url.endswith("/api/meetings/no-such-meeting/token"), timeout=30000
    ) as answer:
        lost.click("#join-button")
    assert answer.value.status == 404, answer.value.status
    poll(
        lost,
        "() => document.getElementById('lobby-error').textContent",
        lambda text: text.startswith("There is no meeting at this address."),
        what="no meeting at this address",
    )
    assert lost.locator("#lobby").is_visible() and lost.locator("#room").is_hidden()
    lost.context.close()

    alice = open_page(browser, f"{server.url}/", "alice")
    assert alice.locator("#sign-in").is_visible()
    assert alice.locator("#meetings").count() == 0  # nothing to own before signing in
    alice.click("#new-meeting")  # meetings are made signed in: to the provider
    alice.wait_for_selector("input[name=sub]")
    alice.go_back()
    sign_in(alice, "alice")
    assert alice.locator("#signed-in").inner_text() == "Signed in as Alice Martin"
    assert alice.input_value("#name-input") == "Alice Martin"
    alice.click("#new-meeting")  # signed in: the form of My meetings
    poll(
        alice,
        "() => document.activeElement.id",
        lambda focused: focused == "meeting-name",
        what="New meeting leads to My meetings' form",
    )
    alice.fill("#meeting-name", "Team meeting")
    alice.select_option("#meeting-access", "trusted")
    artefact(alice, "identity-my-meetings")
    alice.click("#create-meeting button[type=submit]")
    alice.wait_for_url(f"{server.url}/r/*")
    slug = alice.url.rsplit("/r/", 1)[1]
    room_url = f"{server.url}/r/{slug}"
    item = alice.locator(f"#meeting-list li[data-slug='{slug}']")
    assert item.locator("input.name").input_value() == "Team meeting"
    alice.click("#join-button")
    alice.wait_for_selector("#room:not([hidden])")
    assert alice.inner_text("#room-title") == "Team meeting"

    # a second signed-in user enters the trusted room directly
    bob = open_page(browser, room_url, "bob")
    sign_in(bob, "bob")
    assert bob.url == room_url  # back where he was
    bob.click("#join-button")
    bob.wait_for_selector("#room:not([hidden])")
    assert bob.locator("#waiting").count() == 0
    tile_of(alice, "Bob Durand").wait_for(timeout=30000)
    # the host may record and transcribe her meeting; Bob, not a host, may not
    alice.locator("#record-button").wait_for(timeout=10000)
    alice.click("#more-button")
    alice.locator("#transcription-button").wait_for(timeout=10000)
    alice.click("#more-button")
    bob.click("#more-button")
    bob.locator("#captions-toggle").wait_for(state="attached")
    assert bob.locator("#record-button").is_hidden()
    assert bob.locator("#transcription-button").is_hidden()
    bob.click("#more-button")

    # a guest waits with his preview and name; the host hears and sees it, and admits him
    guest = open_page(browser, room_url, "gabriel")
    guest.wait_for_selector("#sign-in")
    poll(
        guest,
        "() => document.getElementById('lobby-heading').textContent",
        lambda text: text == "Team meeting",
        what="the meeting's name in the lobby",
    )
    assert guest.locator("#room-input").is_hidden()  # not its code as a "Meeting name"
    guest.fill("#name-input", "Gabriel")
    guest.click("#join-button")
    guest.wait_for_selector("#waiting")
    assert guest.locator("#lobby").is_visible() and guest.locator("#preview").is_visible()
    card = alice.locator("#lobby-card")
    card.wait_for(state="visible", timeout=30000)
    assert "Gabriel" in card.inner_text() and "guest" in card.inner_text()
    assert alice.get_attribute("#lobby-card", "data-chimes") == "1"
    screenshot(guest, "identity-guest-waiting")
    screenshot(alice, "identity-host-notified")
    card.get_by_role("button", name="Admit Gabriel").click()
    guest.wait_for_selector("#room:not([hidden])", timeout=30000)
    card.wait_for(state="hidden")
    seen = poll(
        guest,
        REMOTE_MEDIA,
        lambda m: (
            len([v for v in m["videos"] if v["w"] > 0 and v["remote"]]) >= 2 and m["audioBytes"] > 0
        ),
        what="admitted guest sees Alice and Bob",
    )
    assert seen["framesDecoded"] > 0
    tile_of(alice, "Gabriel").wait_for(timeout=30000)

    # two more guests are denied at once ("Deny all"): told at once, never a token nor media
    knocking = {}
    for name in ("Mallory", "Oscar"):
        page = knocking[name] = open_page(browser, room_url, name.lower())
        page.wait_for_selector("#sign-in")
        page.fill("#name-input", name)
        page.click("#join-button")
        page.wait_for_selector("#waiting")
    mallory, oscar = knocking["Mallory"], knocking["Oscar"]
    card.wait_for(state="visible", timeout=30000)
    card.get_by_role("button", name="Deny Oscar").wait_for(timeout=30000)
    assert alice.get_attribute("#lobby-card", "data-chimes") == "3"
    artefact(alice, "identity-host-two-waiting")
    card.locator("#deny-all").click()
    for page in (mallory, oscar):
        poll(
            page,
            "() => document.getElementById('lobby-error').textContent",
            lambda text: "declined" in text,
            what="the denied guest is told",
        )
    oscar.context.close()
    artefact(mallory, "identity-guest-denied")
    mallory.click("#join-button")  # at once again: refused, no loop
    poll(
        mallory,
        "() => document.getElementById('lobby-error').textContent",
        lambda text: "ask again in" in text,
        what="knocking again is refused",
    )
    assert card.is_hidden()  # no new knock reached the host
    state = mallory.evaluate(
        "() => ({room: !document.getElementById('room').hidden, session: !!window.visio.session,"
        " videos: document.querySelectorAll('#room video').length})"
    )
    assert state == {"room": False, "session": False, "videos": 0}
    assert tile_of(alice, "Mallory").count() == 0

    # the owner manages it in My meetings: rename, access, delete (which ends the meeting)
    manage = alice.context.new_page()
    manage.goto(f"{server.url}/")
    item = manage.locator(f"#meeting-list li[data-slug='{slug}']")
    item.wait_for(timeout=30000)
    item.locator("input.name").fill("Team sync")
    item.locator("input.name").press("Tab")
    poll(
        manage,
        f"() => document.querySelector(\"li[data-slug='{slug}']\").dataset.saved",
        lambda v: v == "yes",
        what="the new name saved",
    )
    item.locator("select.access").select_option("restricted")
    item.locator("input.invited").fill("carol@example.org, Dan@Example.org")
    item.locator("input.invited").press("Tab")
    screenshot(manage, "identity-my-meetings-list")
    mine = poll(
        manage,
        "async () => (await (await fetch('/api/meetings')).json()).meetings",
        lambda ms: ms and ms[0]["invited"] == ["carol@example.org", "dan@example.org"],
        what="the changes stored",
    )
    assert mine[0]["name"] == "Team sync" and mine[0]["access"] == "restricted"
    item.locator("button.delete").click()
    item.locator("button.delete").click()  # the second click confirms
    manage.locator("#meeting-list li.empty").wait_for(timeout=30000)
    poll(
        bob,
        "() => !document.getElementById('room').hidden",
        lambda v: v is False,
        what="the deleted meeting ends for those in it",
    )
    # signing out ends the session here and at the provider (RP-initiated), then comes back
    manage.click("#sign-out")
    manage.wait_for_url(f"{provider.issuer}/oauth2/end_session?*")
    manage.click("button:has-text('End session')")
    manage.wait_for_url(f"{server.url}/")
    manage.wait_for_selector("#sign-in")
    assert manage.evaluate("async () => (await (await fetch('/auth/me')).json()).user") is None
    for page in (alice, bob, guest, mallory):
        page.context.close()
