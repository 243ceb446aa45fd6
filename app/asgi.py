"""ASGI entry point for uvicorn: ``uvicorn app.asgi:app``.

Before the app exists: the settings are read (a value it cannot run with, or an unreachable
database, stops the start with one line on stderr instead of a traceback per uvicorn worker)
and every misspelt ``REPIC_`` name is logged with the name it likely meant.
"""

import logging

from app.db import ensure_reachable
from app.errors import DatabaseUnreachable
from app.main import create_app
from app.settings import SettingsError, environment_warnings, get_settings

try:
    _settings = get_settings()
    _settings.data_dir.mkdir(parents=True, exist_ok=True)  # where SQLite's file goes
    ensure_reachable(_settings.database_url)
except (SettingsError, DatabaseUnreachable) as exc:
    raise SystemExit(str(exc)) from None

app = create_app(_settings)
for _warning in environment_warnings():
    logging.getLogger(__name__).warning("%s", _warning)
