"""A worker process for the process-level tests. It prints the ids of each batch, then

* `hang`: hangs in the handler (touching its leases, as a live worker does) until killed;
* `slow`: waits for a line on stdin (the test's go-ahead), then answers `payload[::-1]`;
  SIGTERM makes it drain (finish the batch in flight, acknowledge it) and exit 0.

    python tests/queue/crash_worker.py REDIS_URL WORKER_NAME hang|slow
"""

from __future__ import annotations

import asyncio
import sys

from service.queue import JobDef, JobResult, Worker, open_queue
from service.settings import Settings


async def main(url: str, name: str, mode: str) -> None:
    settings = Settings(queue_url=url)
    queue = open_queue(url, settings)

    async def handler(jobs: list[JobDef]) -> list[JobResult]:
        print("BATCH " + ",".join(job.id for job in jobs), flush=True)
        if mode == "hang":
            await asyncio.Event().wait()  # never set: hang until SIGKILL
        await asyncio.to_thread(sys.stdin.readline)
        return [JobResult.ok([job.payload[::-1]]) for job in jobs]

    worker = Worker(
        queue=queue,
        handler=handler,
        name=name,
        max_batch=4,
        max_wait_ms=100,
        visibility_timeout_s=1.0,
        poll_block_ms=50,
    )
    await worker.run(install_signal_handlers=True)
    await queue.close()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
