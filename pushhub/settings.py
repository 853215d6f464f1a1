"""PushHub settings: one module, everything from the environment (django-environ).

PUSHHUB_ENV selects the profile:
- ``dev`` (default): DEBUG on, SQLite under var/, filesystem Celery broker, file cache: nothing to install.
- ``production``: DEBUG off, refuses to start with the development SECRET_KEY or FIELD_ENCRYPTION_KEY.
Tests run with whatever DATABASE_URL / REDIS_URL the environment gives (CI: PostgreSQL + Redis).
"""

import ipaddress
import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PUSHHUB_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(str(BASE_DIR / ".env"))

PUSHHUB_ENV = env.str("PUSHHUB_ENV", default="dev")
if PUSHHUB_ENV not in {"dev", "production"}:
    raise ImproperlyConfigured(f"PUSHHUB_ENV must be 'dev' or 'production', not {PUSHHUB_ENV!r}")
PRODUCTION = PUSHHUB_ENV == "production"

# Development-only defaults. Production refuses both (see the check below).
DEV_SECRET_KEY = "dev-insecure-pushhub-secret-key-change-me-in-production-0123456789"
DEV_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHktcHVzaGh1Yi1maWVsZC1rZXktMzJieXQ="

SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation: prepend a new key, run
# the re-encryption, then drop the old one).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEY", default=[DEV_FIELD_ENCRYPTION_KEY])
# API keys are stored as HMAC(API_KEY_HMAC_SECRET, key). Separate from SECRET_KEY so that rotating
# the session-signing key does not invalidate every tenant's API keys.
API_KEY_HMAC_SECRET = env.str("API_KEY_HMAC_SECRET", default=SECRET_KEY)

if PRODUCTION:
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("production: set SECRET_KEY to a random value of at least 32 characters")
    if DEV_FIELD_ENCRYPTION_KEY in FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured(
            "production: set FIELD_ENCRYPTION_KEY (Fernet key); the dev key is refused"
        )
    if API_KEY_HMAC_SECRET == DEV_SECRET_KEY:
        raise ImproperlyConfigured("production: set API_KEY_HMAC_SECRET (or SECRET_KEY)")

DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Public base URL for the absolute URLs we hand out (events URL, trigger URLs). Empty: taken from the request.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="").rstrip("/")
PORT = env.int("PORT", default=8000)

INSTALLED_APPS = [
    # Our apps first: their registration/* templates (password reset, login) replace the admin's.
    "tenants",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "pushhub.apps.StaticFilesConfig",  # django.contrib.staticfiles, ignoring npm's build output in static/
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pushhub.wechat.sandbox",
    "formids",
    "templates_app",
    "webhooks",
]

MIDDLEWARE = [
    "pushhub.logs.RequestIdMiddleware",  # first: every later log line of the request carries its id
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "pushhub.middleware.ApiBodyLimitMiddleware",
    "pushhub.middleware.NulInUrlMiddleware",
    "pushhub.middleware.ApiNotFoundMiddleware",
    "pushhub.ratelimit.RateLimitHeadersMiddleware",
    # Django's session, locale, auth and messages middleware, skipped on MACHINE_PATH_PREFIXES.
    "pushhub.middleware.SessionMiddleware",
    "pushhub.middleware.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "pushhub.middleware.AuthenticationMiddleware",
    "pushhub.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pushhub.urls"
WSGI_APPLICATION = "pushhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "pushhub" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "tenants.dashboard_scope.dashboard_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'pushhub.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + IMMEDIATE transactions + a busy timeout: web, worker and the sandbox write concurrently.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file (not :memory:) test database: live-server threads then get connections of their own, so
    # tests that hit the sandbox concurrently over HTTP work on SQLite too.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", str(VAR_DIR / f"test-{os.getpid()}.sqlite3")
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, whose per-request health check asks the socket before it sends SELECT 1
        # (pushhub/postgresql/base.py).
        DATABASES["default"]["ENGINE"] = "pushhub.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Behind pgbouncer in transaction mode (README "Operations: pgbouncer") ------------------------
# There each transaction may run on another server connection, so nothing may outlive a transaction on the
# server. PushHub's own code keeps nothing there (no session SET, no advisory lock held across statements, no
# LISTEN, no temp table, no held cursor); this setting turns off what Django itself would keep: the
# server-side cursors of QuerySet.iterator() (DECLARE … WITH HOLD, then FETCHes in later transactions).
# Prepared statements stay off as Django leaves them: its default cursor (psycopg's ClientCursor) never
# prepares, and it connects with prepare_threshold=None, which keeps OPTIONS server_side_binding's cursor from
# preparing too. pgbouncer before 1.21 cannot carry them, so a prepare_threshold in DATABASE_URL is refused.
# "session" (the default): direct to PostgreSQL, or through a pgbouncer in session mode.
DATABASE_POOL_MODE = env.str("DATABASE_POOL_MODE", default="session")
if DATABASE_POOL_MODE not in {"session", "transaction"}:
    raise ImproperlyConfigured(
        f"DATABASE_POOL_MODE must be 'session' or 'transaction', not {DATABASE_POOL_MODE!r}"
    )
if DATABASE_POOL_MODE == "transaction" and DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    if DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold") is not None:
        raise ImproperlyConfigured(
            "DATABASE_POOL_MODE=transaction: drop prepare_threshold from DATABASE_URL (pgbouncer in transaction "
            "mode cannot carry prepared statements)"
        )

# --- Redis: cache (tokens, locks, rate limits) and Celery broker ------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="pushhub")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }
else:
    # Shared by the web and worker processes of `make run` with nothing to install, and its add() is
    # atomic (a unique key in a transaction), which the token lock needs; the file cache's is not.
    # The table is made by `manage.py createcachetable` (`make run` does it; the test runner too).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "pushhub_cache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }

# --- Celery ----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery"
    for _sub in ("queue", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }

# --- Celery broker: Redis or RabbitMQ (README "Operations: brokers") ------------------------------
# CELERY_BROKER_URL chooses (redis:// or amqp://); the cache stays on REDIS_URL either way. Each transport
# gets only its own options: kombu ignores the other transports' options silently, so a Redis option on
# RabbitMQ would look configured and do nothing.
BROKER_KIND = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
}.get(CELERY_BROKER_URL.split("://", 1)[0].lower(), "other")
# The longest countdown/ETA the pipeline gives a task (templates_app/delivery/queue.py clamps to it; a chunk
# run early re-checks its in-flight lease and queues itself again; a retry comes sooner). A task waiting for
# its ETA sits in a worker unacknowledged: on Redis it is handed to another worker after the visibility
# timeout, and RabbitMQ closes the worker's channel after its consumer_timeout (30 min by default). Keep
# this well below both.
BROKER_MAX_COUNTDOWN = env.float("BROKER_MAX_COUNTDOWN", default=600.0)
if BROKER_KIND == "redis":
    # An unacknowledged task (running, or waiting for its ETA) is redelivered after this many seconds: above
    # BROKER_MAX_COUNTDOWN plus a chunk's budget, or ETA tasks would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("REDIS_VISIBILITY_TIMEOUT", default=3600),
    }
elif BROKER_KIND == "rabbitmq":
    # Publisher confirms: send_task returns once RabbitMQ has the message (persistent, in a durable queue),
    # so a push whose start was queued survives a broker restart right after the answer.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# When the broker connection drops (RabbitMQ restarted or closing it; Redis restarted) a running task keeps
# going and writes its answers; the broker hands its message to a worker again, whose run finds the deliveries
# done or in their in-flight lease. Cancelling the task instead (Celery 6's default) would cut every send in
# flight, each a subscribe delivery reported timeout_ambiguous. Said explicitly so the upgrade changes nothing.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "expire-credits": {"task": "formids.expire_credits", "schedule": 300.0},
    "release-stale-claims": {"task": "formids.release_stale_claims", "schedule": 60.0},
    "run-scheduled-pushes": {"task": "templates_app.run_scheduled_pushes", "schedule": 15.0},
}
# Held deliveries (templates_app/delivery/holds.py): a hold ends, and a release lost with its task is redone,
# within this many seconds (API.md: within 5 s); every held delivery is retried every HOLD_RECHECK_SECONDS
# for credits no upload reported (a canceled push's claims given back).
HOLD_SWEEP_SECONDS = env.float("HOLD_SWEEP_SECONDS", default=2.0)
HOLD_RECHECK_SECONDS = env.float("HOLD_RECHECK_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE["sweep-holds"] = {"task": "templates_app.sweep_holds", "schedule": HOLD_SWEEP_SECONDS}

# --- WeChat ----------------------------------------------------------------------------------
WECHAT_API_BASE = env.str("WECHAT_API_BASE", default="https://api.weixin.qq.com").rstrip("/")
# Where apps registered with sandbox=true send their WeChat calls: this server's own sandbox.
SANDBOX_API_BASE = env.str("SANDBOX_API_BASE", default=f"http://127.0.0.1:{PORT}/sandbox/wechat").rstrip("/")
# Where the sandbox delivers WeChat's event pushes (subscribe events) for sandbox apps: this server.
SANDBOX_EVENTS_BASE = env.str(
    "SANDBOX_EVENTS_BASE", default=PUBLIC_BASE_URL or f"http://127.0.0.1:{PORT}"
).rstrip("/")
# If set, the sandbox's _control/ endpoints (issue formIds, accept subscriptions, read inboxes) need the
# header X-Sandbox-Token. Set it wherever the server is reachable by others; in production, without it, the
# control API answers 403 (the dashboard's sandbox phone does not use it).
SANDBOX_CONTROL_TOKEN = env.str("SANDBOX_CONTROL_TOKEN", default="")
WECHAT_CONNECT_TIMEOUT = env.float("WECHAT_CONNECT_TIMEOUT", default=3.05)
WECHAT_READ_TIMEOUT = env.float("WECHAT_READ_TIMEOUT", default=10.0)
# Refresh a cached access token this many seconds before WeChat says it expires.
WECHAT_TOKEN_REFRESH_AHEAD = env.int("WECHAT_TOKEN_REFRESH_AHEAD", default=300)
# Seconds a process reuses the token it last read from the cache before reading it again (see tokens.py).
WECHAT_TOKEN_MEMO_SECONDS = env.float("WECHAT_TOKEN_MEMO_SECONDS", default=5.0)
# Sends in flight per process (and keep-alive connections kept): a `worker` process's chunk tasks share them,
# so while one task reads or writes its rows the other can have them all.
WECHAT_POOL_SIZE = env.int("WECHAT_POOL_SIZE", default=64)

# --- Credits ---------------------------------------------------------------------------------
# formIds stop being handed out this long before they expire (see formids.services.expiry_margin).
FORMID_EXPIRY_MARGIN = env.int("FORMID_EXPIRY_MARGIN", default=3600)
# A claim older than this belongs to a worker that died: the sweep gives the credit back.
CREDIT_CLAIM_LEASE = env.int("CREDIT_CLAIM_LEASE", default=15 * 60)

# --- Delivery ------------------------------------------------------------------------------------
PUSH_CHUNK_SIZE = env.int("PUSH_CHUNK_SIZE", default=500)  # recipients per chunk task
# Parallel WeChat calls per chunk task, and the window of sends marked as attempted in one statement. Sending
# is bound by WeChat's latency, not CPU: with 32, a process's pool (WECHAT_POOL_SIZE, 64) was full only while
# both its tasks were sending; with 64 either can fill it while the other reads or writes its rows (issue 19:
# the 30k broadcast ~2,600 → ~3,300/s, with less CPU a delivery). SEND_RATE_PER_APP paces WeChat, not this.
SEND_CONCURRENCY = env.int("SEND_CONCURRENCY", default=64)
SEND_RATE_PER_APP = env.int("SEND_RATE_PER_APP", default=2000)  # sends per second per app, all workers
DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=5)
DELIVERY_RETRY_BASE = env.float("DELIVERY_RETRY_BASE", default=2.0)  # seconds, doubled per attempt (+ jitter)
DELIVERY_RETRY_MAX = env.float("DELIVERY_RETRY_MAX", default=60.0)
# A delivery attempted this recently is being sent by another run: left alone (seconds).
DELIVERY_IN_FLIGHT_LEASE = env.int("DELIVERY_IN_FLIGHT_LEASE", default=120)
# A queued/running push without progress for this long is queued again by the beat sweep (lost messages).
DELIVERY_STALL_AFTER = env.int("DELIVERY_STALL_AFTER", default=300)
DELIVERY_ENUMERATION_LEASE = env.int("DELIVERY_ENUMERATION_LEASE", default=60)
# A chunk stops starting new sends after this many seconds and queues the rest (keeps tasks short).
DELIVERY_CHUNK_BUDGET = env.int("DELIVERY_CHUNK_BUDGET", default=60)
# Per-minute limits on sending (429 + Retry-After): per trigger URL / API template, and per tenant.
TRIGGER_RATE_PER_TEMPLATE = env.int("TRIGGER_RATE_PER_TEMPLATE", default=600)
TRIGGER_RATE_PER_TENANT = env.int("TRIGGER_RATE_PER_TENANT", default=3000)

# --- Lanes: which Celery queue each kind of work waits in (templates_app/delivery/lanes.py) ------------------
# Transactional sends (a push to listed recipients, at most SEND_LANE_MAX_RECIPIENTS, and hold releases) never
# queue behind a broadcast's chunks: they have a queue of their own, consumed by the Procfile's ``sends``
# worker. Broadcasts (@all, segments) are enumerated and sent from BROADCAST_QUEUE (the ``worker`` processes),
# and beat's sweeps and the retention sweep run from MAINTENANCE_QUEUE (the ``maintenance`` worker), so a long
# sweep never takes a sending slot. Give them all one name to run everything on one queue (as before lanes).
DEFAULT_QUEUE = env.str("DEFAULT_QUEUE", default="celery")  # anything not routed (none of the pipeline)
CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE
SEND_QUEUE = env.str("SEND_QUEUE", default="sends")
BROADCAST_QUEUE = env.str("BROADCAST_QUEUE", default="broadcast")
MAINTENANCE_QUEUE = env.str("MAINTENANCE_QUEUE", default="maintenance")
# A listed push (openids or aliases; the API takes at most 1,000: two chunks) up to this many recipients is a
# transactional send; more, and it shares the broadcast lane (and the per-tenant share below).
SEND_LANE_MAX_RECIPIENTS = env.int("SEND_LANE_MAX_RECIPIENTS", default=1000)
CELERY_TASK_ROUTES = ("templates_app.delivery.lanes.route",)
# A tenant's share of the broadcast lane (templates_app/delivery/share.py): at most BROADCAST_WINDOW of its
# broadcast chunks are queued or running at once; the rest wait parked in Redis and are queued as its chunks
# finish, so tenants broadcasting at once take turns in the queue. Keep the window at least the broadcast
# slots (``worker`` processes × WORKER_CONCURRENCY) plus a few, or a tenant alone leaves slots idle. A chunk's
# place in the window expires after BROADCAST_SHARE_LEASE seconds (a chunk lost with a SIGKILLed worker).
BROADCAST_SHARE = env.bool("BROADCAST_SHARE", default=True)
BROADCAST_WINDOW = env.int("BROADCAST_WINDOW", default=8)
BROADCAST_SHARE_LEASE = env.float("BROADCAST_SHARE_LEASE", default=3 * DELIVERY_CHUNK_BUDGET)

# --- Webhooks (webhooks/) --------------------------------------------------------------------------
# The Celery queue of the webhook workers (the Procfile's ``webhooks`` process): never the senders' queue.
WEBHOOK_QUEUE = env.str("WEBHOOK_QUEUE", default="webhooks")
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)  # seconds for a 2xx, connection included
# Drains of one endpoint at a time (each a thread of the webhook worker): a slow receiver holds no more.
WEBHOOK_ENDPOINT_CONCURRENCY = env.int("WEBHOOK_ENDPOINT_CONCURRENCY", default=2)
WEBHOOK_DISABLE_AFTER_DAYS = env.int("WEBHOOK_DISABLE_AFTER_DAYS", default=5)
WEBHOOK_SWEEP_SECONDS = env.float("WEBHOOK_SWEEP_SECONDS", default=5.0)
# Multiplies the retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h): the fault suite runs it in
# hundredths. Production keeps 1.
WEBHOOK_RETRY_SCALE = env.float("WEBHOOK_RETRY_SCALE", default=1.0)
# Lifts the SSRF guard (https only in production; no loopback, private, link-local ... addresses): for
# development and tests, never for a server others can register URLs on.
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
CELERY_BEAT_SCHEDULE["webhooks-sweep"] = {
    "task": "webhooks.sweep",
    "schedule": WEBHOOK_SWEEP_SECONDS,
    "options": {"queue": WEBHOOK_QUEUE},
}

# --- Metrics (/metrics, pushhub/metrics.py) ---------------------------------------------------------
# Prometheus scrapes /metrics; it is closed unless the scraper sends METRICS_TOKEN as a Bearer token or comes
# from one of METRICS_ALLOWED_NETWORKS (CIDRs, matched against REMOTE_ADDR). Production opens nothing by
# default; development lets this machine in (loopback). PROMETHEUS_MULTIPROC_DIR (read by prometheus-client
# itself, set by the Procfile) makes every process's counts add up.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(cidr.strip(), strict=False)
        for cidr in env.list(
            "METRICS_ALLOWED_NETWORKS", default=[] if PRODUCTION else ["127.0.0.0/8", "::1/128"]
        )
        if cidr.strip()
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None

# --- Retention (templates_app/retention.py) -----------------------------------------------------------
# The tables that grow with every send or event stay bounded: a beat sweep deletes their rows this many days
# after they stopped mattering, in batches (0 keeps them forever). Pushes and their counts, DailyStat, users,
# live credits and the audit log are never swept.
DELIVERY_RETENTION_DAYS = env.int("DELIVERY_RETENTION_DAYS", default=90)  # after the push finished
CREDIT_RETENTION_DAYS = env.int("CREDIT_RETENTION_DAYS", default=30)  # after it was consumed or expired
INBOUND_EVENT_RETENTION_DAYS = env.int("INBOUND_EVENT_RETENTION_DAYS", default=30)
# Keys are honoured 24 h (API.md): a record is never deleted before that, whatever this says.
IDEMPOTENCY_RETENTION_DAYS = env.int("IDEMPOTENCY_RETENTION_DAYS", default=2)
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)  # once none is pending
INBOX_RETENTION_DAYS = env.int("INBOX_RETENTION_DAYS", default=90)  # the in-app inbox, from the send
SANDBOX_MESSAGE_RETENTION_DAYS = env.int("SANDBOX_MESSAGE_RETENTION_DAYS", default=30)  # the sandbox inbox
# The funnel's recent opens (formids.RecentOpen): only the 24 h re-subscription window needs them.
RECENT_OPEN_RETENTION_DAYS = env.int("RECENT_OPEN_RETENTION_DAYS", default=1)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)  # rows per delete transaction at most
RETENTION_TIME_BUDGET = env.float("RETENTION_TIME_BUDGET", default=120.0)  # seconds a run may take
RETENTION_SWEEP_SECONDS = env.float("RETENTION_SWEEP_SECONDS", default=900.0)
CELERY_BEAT_SCHEDULE["sweep-retention"] = {
    "task": "templates_app.sweep_retention",
    "schedule": RETENTION_SWEEP_SECONDS,
}

# --- SDK -----------------------------------------------------------------------------------------
SDK_SESSION_DAYS = env.int("SDK_SESSION_DAYS", default=30)
# Requests per minute to /sdk/v1 per (app, openid) and per client IP; over it: 429 + Retry-After.
SDK_RATE_PER_OPENID = env.int("SDK_RATE_PER_OPENID", default=120)
# Dashboard sign-in: failed attempts per account and per address in a window (tenants/login.py).
LOGIN_FAILURE_WINDOW = env.int("LOGIN_FAILURE_WINDOW", default=15 * 60)
LOGIN_FAILURES_PER_ACCOUNT = env.int("LOGIN_FAILURES_PER_ACCOUNT", default=5)
LOGIN_FAILURES_PER_IP = env.int("LOGIN_FAILURES_PER_IP", default=30)
SDK_RATE_PER_IP = env.int("SDK_RATE_PER_IP", default=1200)
# Seconds each process keeps the live app of an SDK call's AppID (formids/live_apps.py): a change saved in the
# process empties it at once; other processes follow within this time (a deleted app: 404). 0: no cache.
SDK_APP_CACHE_SECONDS = env.float("SDK_APP_CACHE_SECONDS", default=5.0)
# An SDK call updates its user's last_seen only when the stored one is older than this (seconds): a user
# active every minute costs one write per window, not one per call.
SDK_LAST_SEEN_RESOLUTION = env.int("SDK_LAST_SEEN_RESOLUTION", default=300)
# SDK uploads of one app that a web process stores at once, each statement holding every upload that arrived
# while the one before ran (formids.services.take_uploaded_ids, pushhub/group_commit.py). 1: the fewest
# statements (PostgreSQL's CPU per upload); more: less waiting in the process, more statements.
SDK_UPLOAD_STATEMENTS_IN_FLIGHT = env.int("SDK_UPLOAD_STATEMENTS_IN_FLIGHT", default=1)

# --- Auth, i18n, static ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"
# Password-reset and invitation mails: printed on the console unless an SMTP server is configured.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="PushHub <noreply@pushhub.local>")
LOCALE_PATHS = [BASE_DIR / "locale"]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- API ---------------------------------------------------------------------------------------
API_BODY_LIMIT = 64 * 1024
# Views that take lists of 10,000 (bulk tagging) declare this larger limit (``body_limit``); it stays under
# Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which then never refuses an API body first.
API_BULK_BODY_LIMIT = 2 * 1024 * 1024
API_PATH_PREFIXES = ("/api/", "/sdk/", "/t/", "/wechat/")
# Called only by programs (the SDK, trigger URLs' callers, WeChat's servers): the browser's middleware (sessions,
# language, signed-in user, messages) is skipped there (pushhub.middleware). Not /api/: its Swagger UI and
# Redoc pages are a browser's.
MACHINE_PATH_PREFIXES = ("/sdk/", "/t/", "/wechat/")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.auth.HasApiKeyScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["pushhub.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "pushhub.api.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "pushhub.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PushHub API",
    "DESCRIPTION": "Push channel for WeChat mini-programs. Contract: API.md v1.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/(api|sdk)/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "pushhub.api.add_error_responses",
        "pushhub.api.forbid_unknown_request_fields",
    ],
}

# --- Security ------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # LOG_FORMAT=json: one JSON object per line, with request_id, tenant, app and push where known.
        "json": {"()": "pushhub.logs.JsonFormatter"},
    },
    "filters": {
        # Trigger URLs are credentials: the request paths Django logs lose their tokens (pushhub/logs.py).
        "redact_trigger_tokens": {"()": "pushhub.logs.RedactTriggerTokens"},
        "context": {"()": "pushhub.logs.ContextFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if env.str("LOG_FORMAT", default="plain") == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "urllib3": {"level": "WARNING"},
        "django.request": {"filters": ["redact_trigger_tokens"]},
        "django.server": {"filters": ["redact_trigger_tokens"]},
    },
}

# Errors to Sentry when SENTRY_DSN is set, credentials scrubbed first (pushhub/sentry.py).
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from pushhub.sentry import init_sentry

    init_sentry(
        SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default=""),
        release=env.str("SENTRY_RELEASE", default=""),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )
