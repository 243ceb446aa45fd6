"""`repic data from-feedback`: the caption feedback the next retrain learns from, as a file
(in its own module: it needs the database, the other `repic data` commands do not)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


def test_from_feedback_writes_the_records_the_next_retrain_learns_from(
    container, settings, monkeypatch, tmp_path: Path
) -> None:
    from app.models import User
    from app.services.concepts import Upload
    from tests.utils.captions import caption_row
    from tests.utils.images import fixture_photo

    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    with container.session_factory() as session:
        owner = User(username="anya", password_hash="x", allow_feedback_training=True)
        session.add(owner)
        session.commit()
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[
            Upload(fixture_photo("dog", i), f"{i}.jpg", "image/jpeg") for i in (0, 1)])
    caption_row(container, owner, "<bo> is asleep on the sofa in the afternoon sun, one ear "
                                  "folded back.", [bo])
    out = tmp_path / "feedback.jsonl"
    r = runner.invoke(app, ["data", "from-feedback", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 records (ict 1, ict_multi 0) from 1 consented captions" in r.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["task"], row["solution"], row["real_names"]) == ("ict", "<{name0}>", ["bo"])
    shown = runner.invoke(app, ["data", "preview", str(out)])
    assert shown.exit_code == 0 and '"solution": "<bo>"' in shown.output
