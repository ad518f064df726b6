"""Named defaults, each with the reason it has the value it has."""

from __future__ import annotations

# The Redis every new user has locally; `make run` starts an embedded one when it is silent.
REDIS_URL = "redis://127.0.0.1:6379/0"
# Every key the fleet writes starts with this, so it can share a Redis and tests can wipe theirs.
KEY_PREFIX = "monitao-pd:"

# Backoff: PagerDuty advises retrying 429s "after a few minutes"; 5 s doubling reaches the
# 5-minute cap after 6 tries, so an outage costs a handful of attempts per key per hour.
RETRY_BASE_SECONDS = 5.0
RETRY_CAP_SECONDS = 300.0
# An alert older than a day is no longer actionable; it is dead-lettered as `expired`.
MAX_EVENT_AGE_SECONDS = 24 * 3600.0

# PagerDuty answers in well under a second; a stalled connection must not hold a key for long.
HTTP_CONNECT_TIMEOUT = 5.0
HTTP_READ_TIMEOUT = 10.0
# One attempt (connection, request, answer) must end this long before its key's lease does:
# room for a stalled thread between the last deadline check and the bytes leaving, so that no
# request goes out once another worker may hold the key.
ATTEMPT_MARGIN_SECONDS = 1.0
# After an attempt whose answer was lost (PagerDuty may still process it), the incident's
# next event of another action waits this long, so a late trigger cannot land after its
# resolve; a resolve that follows such a trigger is sent once more after it as well.
UNCERTAIN_WINDOW_SECONDS = 30.0

# A deliver task makes one pass over one key for at most PASS_SECONDS plus one attempt
# (15 s), so 60 s is "a little above the longest task": Celery restores a message a crashed
# worker held after this long.
VISIBILITY_TIMEOUT = 60
# A key's lease outlives one attempt (connect + read timeout) with room to spare; when its
# holder dies the key is due again after at most this long, which bounds crash recovery.
LEASE_SECONDS = 30.0
# After publishing a key's task the dispatcher leaves the key alone this long, so a deep
# queue does not get a second task for the same key; it is also the fallback recovery time.
CLAIM_SECONDS = 60.0
# One deliver task stops taking new events of its key after this long and re-queues the key,
# so one busy incident cannot hold a worker thread.
PASS_SECONDS = 20.0
# How often each worker's dispatcher looks for due keys, and how many it claims at once.
DISPATCH_INTERVAL = 0.25
DISPATCH_BATCH = 500
# The dispatcher stops publishing while the broker queue is this long: keys stay due in the
# schedule (oldest first) instead of piling up as duplicate tasks.
MAX_QUEUE_LENGTH = 10_000

# How long an incident's timeline, and a final event's record, are kept.
TIMELINE_RETENTION_SECONDS = 7 * 24 * 3600.0
EVENT_RETENTION_SECONDS = 7 * 24 * 3600.0

# Delivery is I/O bound: threads wait on PagerDuty's latency without a process each.
# Measured by `make bench` at 150 ms (README, Performance): 32 threads reach ~170 events/s,
# 64 about 250-300 (where one process becomes CPU-bound), 128 no more; prefork x16 ~95.
WORKER_POOL = "threads"
WORKER_POOLS = ("threads", "prefork", "solo")
WORKER_CONCURRENCY = 64

# PagerDuty allows about 120 events per routing key per minute; stay a little under it.
RATE_LIMIT_PER_MINUTE = 100
# PagerDuty counts over a window looking back 60 s from now.
RATE_WINDOW_SECONDS = 60.0
# After a 429 the whole destination waits; PagerDuty advises "a few minutes" if every event
# matters, so 15 s doubling with each 429 in a row reaches 4 minutes after five.
COOLDOWN_BASE_SECONDS = 15.0
COOLDOWN_MAX_SECONDS = 300.0

# Failures in a row (5xx, timeouts, connection errors) across all incidents that open an
# endpoint's circuit: many keys failing together is an outage, not one bad event.
CIRCUIT_THRESHOLD = 10
# An open circuit sends one probe after this long, doubling after each failed probe up to
# the cap: an outage of hours costs two requests a minute, not a retry storm, and the fleet
# notices PagerDuty is back within half a minute (measured: bench/outage.py).
CIRCUIT_OPEN_SECONDS = 5.0
CIRCUIT_MAX_OPEN_SECONDS = 30.0
# A closing circuit wakes the incidents that waited on it this many at a time: one batch
# is one script of a few ms (5-20 µs a slot, bench --scale), under Redis's 10 ms slow-log
# mark, so Redis keeps answering everyone else; the dispatchers wake the rest batch after
# batch, 100,000 within about the second of Redis time waking them takes anyway.
CIRCUIT_WAKE_BATCH = 500
# A dispatcher wakes batch after batch for at most this long before it claims and publishes
# due slots again: the woken slots must be published too, and other workers claim meanwhile.
CIRCUIT_WAKE_SECONDS_PER_TICK = 0.2

# Celery queue that carries deliver tasks.
QUEUE_NAME = "deliver"
# The one Celery task: a delivery pass over one (destination, dedup_key).
DELIVER_TASK = "monitao.deliver"

# Each worker's Prometheus exporter is off unless a port is given: several workers on one host
# need a port each (e.g. 9808, 9809, ...), so no single default port can be right for all.
METRICS_PORT = 0
# Enabling the exporter means wanting it scraped from elsewhere (a container, another host);
# it serves counts and destination names, never a routing key.
METRICS_ADDRESS = "0.0.0.0"
# `monitao-pd status` exits 1 when the oldest pending event is older than this: the longest
# ordinary wait is a 5-minute backoff cap or 429 cooldown, so 10 minutes means stuck.
STATUS_MAX_PENDING_AGE_SECONDS = 600.0
# How long `monitao-pd test-destination` waits for each of its two events.
TEST_DESTINATION_TIMEOUT_SECONDS = 60.0

# Run-time destinations (config/registry.py). A worker keeps those it delivers to in a cache
# of this many (a few KB each); a change reaches it at once through pub/sub, and a poll of the
# registry's version this often catches a notification lost on a reconnect.
DESTINATION_CACHE_SIZE = 10_000
REGISTRY_POLL_SECONDS = 1.0
# Producers and commands without that subscription re-read a registry destination this often.
REGISTRY_READ_TTL_SECONDS = 1.0
# A removed destination's tombstone (its pending events are dead-lettered as
# `destination_removed`, not `unknown_destination`) outlives any event that may still name it.
TOMBSTONE_SECONDS = 8 * 24 * 3600.0
# Past this many destinations, per-destination metric series aggregate under the
# destination's `account` (or `other`): Prometheus copes badly with 100,000 label values.
METRICS_MAX_DESTINATIONS = 100

# Workers re-read maintenance windows added at run time this often: a window takes effect
# within a second without a Redis round trip per event.
MAINTENANCE_CACHE_SECONDS = 1.0
# Changes of run-time windows kept in the change log workers follow; a worker that falls
# further behind (asleep, partitioned) re-reads which destinations have windows instead.
MAINTENANCE_CHANGES_KEPT = 10_000
# A worker keeps the run-time windows of this many recently seen destinations in memory
# (a few MB), reading another destination's when one of its events needs them.
MAINTENANCE_CACHED_DESTINATIONS = 10_000

# State changes from PagerDuty's webhooks go back to MoniTao as deliveries of this
# destination; '@' cannot appear in a configured destination's name, so it never clashes.
CALLBACK_DESTINATION = "@callback"
# MoniTao's own endpoint is not PagerDuty: a generous budget, still fleet-wide.
CALLBACK_RATE_LIMIT_PER_MINUTE = 6000

# PagerDuty retries a webhook delivery for up to 48 hours: remember each delivery id that
# long, so a late retry of one already queued is answered 200 and dropped.
WEBHOOK_DEDUP_SECONDS = 48 * 3600.0
# PagerDuty's webhook bodies are a few KB; anything larger is refused unread (413).
WEBHOOK_MAX_BODY_BYTES = 256 * 1024
# A queued webhook left unacknowledged this long by a receiver (it died mid-way) is taken
# over by another receiver's processor.
WEBHOOK_CLAIM_IDLE_SECONDS = 60.0
# Unmatched webhooks kept for operators to look at (a capped stream).
WEBHOOK_UNMATCHED_MAX = 10_000
# PagerDuty sends a whole webhook at once and waits 5 s for the answer: a request (headers
# and body) not read whole in this time is no delivery it still waits for. Its connection
# is closed, so slow clients cannot hold the receiver's connections.
WEBHOOK_READ_TIMEOUT_SECONDS = 5.0
# Connections the receiver serves at once; past this every request is answered 503.
WEBHOOK_CONCURRENCY_LIMIT = 1000
# Refused webhook requests (unsigned, too large, too slow, ...) are logged one in this
# interval, the rest summed up in one line at its end: a flood costs two lines a minute.
WEBHOOK_REFUSAL_LOG_SECONDS = 60.0
# An inbox entry whose processing failed this many times (or whose processor stopped this
# many times before recording it) goes to the unmatched stream as `failed`: one entry must
# never hold up the inbox. Retries are a claim's idle time apart, so about 4 minutes.
WEBHOOK_MAX_ATTEMPTS = 5
# The receiver re-reads the stored subscriptions' secrets (webhooks/subscriptions.py) when
# their version counter moved; it looks at the counter at most this often (and at once after
# a signature failure, at most every WEBHOOK_SECRETS_RECHECK_SECONDS), so a new subscription
# is accepted within about a second without a restart or a Redis read per request.
WEBHOOK_SECRETS_CHECK_SECONDS = 1.0
WEBHOOK_SECRETS_RECHECK_SECONDS = 0.1
# Incident lookups (GET /incidents/{id}) for webhooks without an incident_key: at most this
# many a minute per API token (PagerDuty allows about 900 REST calls a minute per user
# token, and the maintenance sync shares it); a lookup over it waits for a later attempt.
WEBHOOK_LOOKUPS_PER_MINUTE = 60
# A looked-up incident_key is kept this long: later webhooks of the same incident (its
# notes, its resolve) need no lookup, and a day covers nearly every incident's life.
WEBHOOK_LOOKUP_CACHE_SECONDS = 86400.0
# Attempts of one lookup (PagerDuty's client retries in between): a lookup holds the
# processor for at most this many REST timeouts; a failure is retried with the entry.
WEBHOOK_LOOKUP_ATTEMPTS = 2

# The HTTP API (`monitao-pd api`). Its default port, beside Flower's 5555 and the webhook
# receiver's 8282.
API_PORT = 8300
# A replica keeps a token's scopes this long: a revocation reaches every replica within it
# (the promise is 2 s).
API_TOKEN_CACHE_SECONDS = 1.0
# Request bodies over this are refused (413): a batch of 500 events fits many times over.
API_MAX_BODY_BYTES = 1024 * 1024
# A request body must arrive within this; a client trickling it holds a connection no longer.
API_BODY_READ_SECONDS = 10.0
# `POST /v1/events/batch` takes at most this many events, as `send_many` is used.
API_MAX_BATCH = 500
# Page sizes of the API's lists: the default and the most a client may ask for.
API_PAGE_DEFAULT = 100
API_PAGE_MAX = 1000
# The send test answers within this by default (`?timeout=`), and waits at most the cap.
API_SEND_TEST_TIMEOUT_SECONDS = 30.0
API_SEND_TEST_MAX_TIMEOUT_SECONDS = 120.0

# The console (`monitao-pd api` at /). A session lasts a working day from signing in; the
# overview refreshes itself this often, and asks the workers for a ping with this timeout
# (a refresh waits for it: Celery's ping collects replies for the whole timeout).
CONSOLE_SESSION_SECONDS = 8 * 3600.0
CONSOLE_REFRESH_SECONDS = 5
CONSOLE_PING_SECONDS = 0.5
# Lists of the console's pages (destinations, dead letters) show this many rows a page.
CONSOLE_PAGE = 100

# The intake stream's consumer group (one for the fleet: every worker's consumer in it).
INTAKE_GROUP = "fleet"
# One consumer at a time takes entries (so they are enqueued in stream order: a resolve
# never overtakes its trigger), holding a lease it renews every read. A dead holder's lease
# runs out after this; another worker's consumer then claims what it left pending.
INTAKE_LEASE_SECONDS = 10.0
# Entries one read takes, and how long it blocks waiting for new ones.
INTAKE_BATCH = 200
INTAKE_BLOCK_SECONDS = 1.0

# PagerDuty's REST API (config/pagerduty_rest.py, worker/maintenance_sync.py): one call's
# time limit, the attempts of one call (PagerDuty's client retries 429, 5xx and network
# errors in between), and the maintenance windows' reconciliation period and backoff.
REST_TIMEOUT_SECONDS = 10.0
REST_ATTEMPTS = 3
MAINTENANCE_SYNC_SECONDS = 30.0
MAINTENANCE_SYNC_RETRY_SECONDS = 5.0
MAINTENANCE_SYNC_RETRY_CAP_SECONDS = 600.0
# The one worker reconciling maintenance windows holds its lock this long, renewed while it
# works (a crashed holder's pass is taken over after it), and every worker looks this often
# whether windows, destinations or a retry call for a pass.
MAINTENANCE_SYNC_LOCK_SECONDS = 60.0
MAINTENANCE_SYNC_POLL_SECONDS = 0.25
