"""`monitao-pd worker` with the ack waker's interval from BENCH_ACK_WAKER_SECONDS (0: off).

Only for measuring whether that interval matters: `python -m bench --ack-waker 0.1`.
"""

import os
import sys

from worker import app as worker_app

interval = float(os.environ.get("BENCH_ACK_WAKER_SECONDS", worker_app.AckWakerStep.interval))
if interval > 0:
    worker_app.AckWakerStep.interval = interval
else:
    worker_app.AckWakerStep.start = lambda self, consumer: None  # type: ignore[method-assign]

from cli.main import main  # noqa: E402 - after the patch

sys.exit(main())
