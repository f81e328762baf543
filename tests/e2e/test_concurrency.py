"""Many simultaneous logins."""

import asyncio

import pytest

from xmpp import Client

USERS = {f"load{i:02d}": f"load-pw-{i:02d}" for i in range(10)}
RESOURCES_PER_USER = 5  # 10 accounts x 5 resources = 50 sessions


@pytest.mark.timeout(180)
@pytest.mark.chorus(users=USERS)
async def test_50_concurrent_logins(node):
    clients = [Client(node, user, resource=f"r{r}")
               for user in USERS for r in range(RESOURCES_PER_USER)]
    assert len(clients) == 50
    results = await asyncio.gather(*(c.connect(timeout=60) for c in clients),
                                   return_exceptions=True)
    failed = [(c.name, r) for c, r in zip(clients, results, strict=True) if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of 50 logins failed: {failed[:5]}"
    assert len({c.jid for c in clients}) == 50
    # Every session is live.
    await asyncio.gather(*(c.ping(timeout=20) for c in clients))
