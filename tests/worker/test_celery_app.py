"""The Celery configuration: queues, delivery guarantees, limits, no torch in the parent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.queue import celery_config, create_celery_app
from app.settings import Settings

pytestmark = pytest.mark.nodb


def _settings(**worker: object) -> Settings:
    return Settings(_env_file=None, worker=worker)  # type: ignore[call-arg]


def test_routes_and_delivery_settings() -> None:
    conf = create_celery_app(_settings(broker_url="redis://127.0.0.1:6379/3")).conf
    routes = conf.task_routes
    assert routes["repic.train"]["queue"] == routes["repic.evaluate"]["queue"] == "gpu"
    assert {routes[t]["queue"] for t in ("repic.reembed", "repic.caption_batch",
                                         "repic.rebuild_index")} == {"cpu"}
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.result_backend == "redis://127.0.0.1:6379/3"


def test_visibility_timeout_is_above_every_hard_limit() -> None:
    config = celery_config(_settings(broker_url="redis://127.0.0.1:6379/3",
                                     visibility_timeout_s=7200))
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert visibility == 7200
    for name, limits in config["task_annotations"].items():
        assert limits["soft_time_limit"] < limits["time_limit"] < visibility, name


def test_embedded_mode_uses_sqlite_broker_and_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(_env_file=None, storage={"data_dir": tmp_path})  # type: ignore[call-arg]
    conf = create_celery_app(settings).conf
    assert conf.broker_url.startswith("sqla+sqlite:///")
    assert str(conf.result_backend).startswith("db+sqlite:///")
    # The SQLite transport hands its options to create_engine: none may be set.
    assert conf.broker_transport_options == {}


def test_worker_modules_do_not_import_torch() -> None:
    code = ("import sys, worker.celery_app, worker.tasks, worker.signals, worker.embedded; "
            "app = worker.celery_app.app; assert 'repic.train' in app.tasks; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"
