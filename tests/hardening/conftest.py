"""One production-like stack for the hardening suite: redis-server with AOF + API + 2 workers.

Shared by the corpus, chaos and soak tests (starting it costs more than most of them), with the
union of their knobs: a 4 MP pixel limit (the corpus' near-limit bomb stays cheap), a 2 s
visibility timeout (chaos reclaims fast), 5 deliveries, batches of 4, long job deadlines.
"""

from __future__ import annotations

import pytest
from e2e.stack import Stack, free_port

from .harness import STACK_ENV, AofRedisServer, ensure_workers


@pytest.fixture(scope="package")
def hard_stack(tmp_path_factory, tiny_repo):
    """(stack, redis server); tests call `ensure_workers(stack)` first (chaos kills some)."""
    pytest.importorskip("redis")
    tmp = tmp_path_factory.mktemp("hardening")
    server = AofRedisServer(tmp / "redis", free_port()).start()
    stack = Stack(server.url, tiny_repo, tmp, env=STACK_ENV)
    try:
        stack.start_api()
        ensure_workers(stack, 2)
        yield stack, server
    finally:
        stack.stop()
        server.kill()
