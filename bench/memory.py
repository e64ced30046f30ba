"""Redis bytes per finished job with a 5 MB base64 image in its result, raw and sanitized.

Starts its own redis-server (free loopback port, temp dir), runs one job through the store
(submit -> claim -> complete with ``{"image": "data:image/png;base64,...", "width": 1024}``)
once with the sanitizer off and once with the defaults, and prints ``MEMORY USAGE`` of the
job hash, and of its webhook delivery (which carries its own snapshot of the result) when the
job notifies.

Run: .venv/bin/python bench/memory.py [MB]
"""

from __future__ import annotations

import base64
import random
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.sanitize import Sanitizer  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def finished_job(url: str, image: str, sanitizer: Sanitizer | None, *, notify: bool) -> tuple[str, str | None]:
    with SyncStore(open_backend(url), sanitizer=sanitizer) as store:
        spec = JobSpec(type="render", input={"page": 1},
                       webhook_url="http://127.0.0.1:9/hook" if notify else None)
        job = store.submit(spec).id
        [claimed] = store.claim("default", "bench")
        store.complete(job, claimed.token, {"image": image, "width": 1024, "height": 768})
        return job, (f"{job}~job.completed~0" if notify else None)


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    payload = random.Random(5).randbytes(int(megabytes * 1_000_000 * 3 / 4))
    image = "data:image/png;base64," + base64.b64encode(payload).decode()
    keys = Keys("default")
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory), appendonly=False)
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            print(f"result: {{'image': data URI of {len(image):,} characters, 'width', 'height'}}")
            print(f"{'':<32}{'job hash':>16}{'delivery hash':>16}")
            for name, sanitizer in (("raw (sanitizer off)", None), ("sanitized (defaults)", Sanitizer())):
                for notify in (False, True):
                    client.flushall()
                    job, delivery = finished_job(server.url, image, sanitizer, notify=notify)
                    job_bytes = client.memory_usage(keys.job(job), samples=0)
                    delivery_bytes = client.memory_usage(keys.delivery(delivery), samples=0) if delivery else None
                    label = name + (" +webhook" if notify else "")
                    print(f"{label:<32}{job_bytes:>16,}"
                          f"{(f'{delivery_bytes:,}' if delivery_bytes is not None else '-'):>16}")
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    main()
