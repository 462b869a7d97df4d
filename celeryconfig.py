"""Celery configuration (``config_from_object``): every value comes from the settings, so
containers differ only by their env file. Choices that can lose or double a message say why."""

from __future__ import annotations

from kombu import Exchange, Queue

from worker.celeryapp.beat import build_beat_schedule, scheduler_config
from worker.celeryapp.limits import time_limits
from worker.config.settings import get_settings
from worker.core import names

_s = get_settings()

broker_url = _s.redis_address()
result_backend = _s.redis_address(_s.result_backend)
# rediss://: Redis's certificate verified (REDIS_CA_CERT); kombu, Flower and redbeat read broker_use_ssl.
broker_use_ssl = _s.redis_tls() or None
redis_backend_use_ssl = _s.redis_tls(_s.result_backend) or None
broker_connection_retry_on_startup = True

# Redis has no publisher confirms; fail fast instead of blocking forever when Redis is gone
# (celery#4296), so the bridge keeps its batch, does not commit, and retries.
broker_transport_options = {
    "visibility_timeout": _s.visibility_timeout_s,  # above the longest task / retry wait
    # Sweep for messages of dead workers (unacked past the visibility timeout) every
    # min(10 s, timeout) instead of kombu's default ~100 s (interval x throttle 10).
    "unacked_restore_interval": min(10, _s.visibility_timeout_s),
    "unacked_restore_throttle": 1,
    "priority_steps": [0],  # one list per queue: a worker's BLMOVE pops from one (inflight.py)
    "socket_timeout": _s.connect_timeout_s,
    "socket_connect_timeout": _s.connect_timeout_s,
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout_s}
redis_socket_timeout = _s.connect_timeout_s
redis_socket_connect_timeout = _s.connect_timeout_s
result_expires = 24 * 3600
# Chord header results (and the chord counter) must outlive the longest trend run or the
# callback never fires; Celery's default (None) leaves them without any expiry.
result_chord_expires = 6 * 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

#: The queue of each task module.
_QUEUES = {"ingest": _s.ingest_queue, "trends": _s.trends_queue, "post": names.DEFAULT_QUEUE,
           "maintenance": names.MAINTENANCE_QUEUE}
task_queues = tuple(Queue(queue, Exchange(queue), routing_key=queue) for queue in dict.fromkeys(_QUEUES.values()))
task_default_queue = names.DEFAULT_QUEUE
task_routes = {f"tasks.{module}.*": {"queue": queue, "routing_key": queue} for module, queue in _QUEUES.items()}
# Time limits per task kind (worker/celeryapp/limits.py). No Celery rate_limit on the ingest
# task: it is per worker, so N workers wrote at N x the limit; INGEST_RATE_LIMIT is one bucket
# in Redis shared by all ingest workers (worker/ingest/write_limit.py).
task_annotations = time_limits(_s)

# Ingest tasks are acknowledged after they ran; a killed worker's batch is redelivered
# (task_reject_on_worker_lost), and the idempotent store write makes that harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True

# Flower needs these to show tasks and workers.
worker_send_task_events = True
task_send_sent_event = True

beat_schedule = build_beat_schedule(_s)
# One active beat: celery-redbeat keeps the schedule in Redis under a lock, a second beat waits
# as a standby and takes over when the active one dies (worker/celeryapp/beat.py).
_beat = scheduler_config(_s)
beat_scheduler = _beat["beat_scheduler"]
beat_max_loop_interval = _beat["beat_max_loop_interval"]
redbeat_redis_url = _beat["redbeat_redis_url"]
redbeat_key_prefix = _beat["redbeat_key_prefix"]
redbeat_lock_key = _beat["redbeat_lock_key"]
redbeat_lock_timeout = _beat["redbeat_lock_timeout"]
redbeat_redis_options = _beat["redbeat_redis_options"]
# A restarted beat does not fire a burst of runs it missed while it was down.
beat_cron_starting_deadline = 120
