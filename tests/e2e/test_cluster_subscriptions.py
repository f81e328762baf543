"""Subscriptions across sites, with three real nodes: one request is one
prompt, whichever replication path brings it."""

from test_cluster import CONVERGE_S, login


async def test_a_cross_site_subscription_request_is_one_prompt(cluster3):
    """A request from another site reaches the contact twice underneath:
    routed from the requester's node, and as the replicated roster item
    that records it. The contact's client is shown one prompt."""
    cl = cluster3
    alice = await login(cl, "a", "alice", "dup")
    carol = await login(cl, "c", "carol", "dup")
    await cl.asessions_synced()
    alice.send_presence(to=carol.bare, ptype="subscribe")
    await carol.next_presence(CONVERGE_S, frm=alice.bare, ptype="subscribe")
    # A second session at carol's site is shown the request from the
    # roster there: the item has replicated, so the second path has run.
    carol2 = await login(cl, "c", "carol", "dup2")
    await carol2.next_presence(CONVERGE_S, frm=alice.bare, ptype="subscribe")
    await carol.ping()
    await carol.expect_no_presence(2.0, frm=alice.bare, ptype="subscribe")
    await carol2.expect_no_presence(0.5, frm=alice.bare, ptype="subscribe")
