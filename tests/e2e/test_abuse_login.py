"""The abuse suite, login: a script guessing a colleague's password from
other addresses. It is locked out without learning whether a guess was
right, the colleague keeps logging in from their usual address, and the
password never reaches the log. Prints its numbers (run with ``-s``)."""

import base64
import time

import pytest

from raw import RawStream
from xmpp import NS_SASL, condition_of, connect, localname

ACCOUNT_MAX = 4
DESK = "127.0.0.1"
SCRIPT = ["127.0.4.1", "127.0.4.2", "127.0.4.3"]
STRANGER = "127.0.5.1"
LIMITS = {"limits": {"auth_failures_per_account_max": ACCOUNT_MAX,
                     "auth_failures_per_address_max": 1000,
                     "auth_failure_window_secs": 600}}


async def plain_answer(node, source: str, user: str, password: str) -> str | None:
    """One PLAIN attempt from `source`; None on success, else the condition."""
    s = await RawStream.to_node(node, direct_tls=True, source=source)
    try:
        await s.tls_and_features()
        res = await s.auth_plain(user, password)
        return None if localname(res.tag) == "success" else condition_of(res, NS_SASL)
    finally:
        await s.close()


async def scram_first_answer(node, source: str, user: str) -> str:
    """The answer to SCRAM's first message: a challenge, or a failure."""
    s = await RawStream.to_node(node, direct_tls=True, source=source)
    try:
        await s.tls_and_features()
        first = base64.b64encode(f"n,,n={user},r=0123456789abcdef".encode()).decode()
        await s.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        el = await s.expect(lambda e: localname(e.tag) in ("challenge", "failure"))
        return "challenge" if localname(el.tag) == "challenge" else condition_of(el, NS_SASL)
    finally:
        await s.close()


@pytest.mark.chorus(config=LIMITS)
async def test_a_guessing_script_is_locked_out_and_the_colleague_is_not(node):
    password = node.password("alice")
    # Alice logs in at her desk: that address becomes usual for her.
    assert await plain_answer(node, DESK, "alice", password) is None

    guesses = [f"Summer202{i}!" for i in range(ACCOUNT_MAX)]
    t0 = time.monotonic()
    answers = [await plain_answer(node, SCRIPT[i % len(SCRIPT)], "alice", g)
               for i, g in enumerate(guesses)]
    assert answers == ["not-authorized"] * ACCOUNT_MAX, answers

    # Locked for strangers: the right password and a wrong one, in any
    # spelling of the account, PLAIN or SCRAM, get one and the same answer.
    locked = {
        "right": await plain_answer(node, SCRIPT[0], "alice", password),
        "wrong": await plain_answer(node, SCRIPT[1], "alice", "Winter2024!"),
        "right, other case": await plain_answer(node, SCRIPT[2], "ALICE", password),
        "scram": await scram_first_answer(node, SCRIPT[0], "Alice"),
        "new address": await plain_answer(node, STRANGER, "alice", password),
    }
    took = time.monotonic() - t0
    assert set(locked.values()) == {"temporary-auth-failure"}, locked

    # Alice, at her desk, is not locked out by the script; bob is untouched.
    assert await plain_answer(node, DESK, "alice", password) is None
    assert await scram_first_answer(node, DESK, "alice") == "challenge"
    bob = await connect(node, "bob")
    await bob.ping()
    await bob.close()
    client = await connect(node, "alice", mech="SCRAM-SHA-256", resource="desk")
    await client.ping()
    await client.close()

    log = node.log_path.read_bytes()
    for secret in [password, *guesses, "Winter2024!"]:
        assert secret.encode() not in log, f"{secret!r} is in the node's log"
        assert base64.b64encode(f"\0alice\0{secret}".encode()) not in log
    print(f"\n{ACCOUNT_MAX} guesses from {len(SCRIPT)} addresses locked the account for "
          f"strangers in {took:.2f} s; the right password while locked: "
          f"{locked['right']}; alice at her desk: logged in")
