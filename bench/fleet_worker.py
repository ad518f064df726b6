"""`monitao-pd worker` for the bench's experiments, not for production:

- with BENCH_ACK_WAKER_SECONDS, the ack waker's interval (0: off):
  `python -m bench --ack-waker 0.1`;
- with `--pool=gevent`, gevent's monkey-patching first (as `celery worker -P gevent` does)
  and that pool allowed: `pip install gevent; python -m bench --pools gevent:64`.
"""

import os
import sys

if "--pool=gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

from config import defaults
from worker import app as worker_app

if "--pool=gevent" in sys.argv:
    defaults.WORKER_POOLS = (*defaults.WORKER_POOLS, "gevent")

interval = float(os.environ.get("BENCH_ACK_WAKER_SECONDS", worker_app.AckWakerStep.interval))
if interval > 0:
    worker_app.AckWakerStep.interval = interval
else:
    worker_app.AckWakerStep.start = lambda self, consumer: None  # type: ignore[method-assign]

from cli.main import main  # noqa: E402 - after the patches

sys.exit(main())
