"""Settings of the Celery worker subprocesses started by test_worker.py: the project's settings, plus the
test's queue, broker directory and short leases (given through the environment by the fixture)."""

import os

from pushhub.settings import *  # noqa: F403

CELERY_TASK_DEFAULT_QUEUE = os.environ["DELIVERY_TEST_QUEUE"]
# Every lane on the test's queue, unless the test gives the lanes queues of their own (the environment).
SEND_QUEUE = os.environ.get("SEND_QUEUE", CELERY_TASK_DEFAULT_QUEUE)
BROADCAST_QUEUE = os.environ.get("BROADCAST_QUEUE", CELERY_TASK_DEFAULT_QUEUE)
MAINTENANCE_QUEUE = os.environ.get("MAINTENANCE_QUEUE", CELERY_TASK_DEFAULT_QUEUE)
_broker_dir = os.environ.get("DELIVERY_TEST_BROKER_DIR")
if _broker_dir:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": f"{_broker_dir}/queue",
        "data_folder_out": f"{_broker_dir}/queue",
        "processed_folder": f"{_broker_dir}/processed",
        "control_folder": f"{_broker_dir}/control",
        "store_processed": False,
        "polling_interval": 0.05,
    }
DELIVERY_IN_FLIGHT_LEASE = float(os.environ.get("DELIVERY_IN_FLIGHT_LEASE", "120"))
DELIVERY_ENUMERATION_LEASE = float(os.environ.get("DELIVERY_ENUMERATION_LEASE", "60"))
