"""The admin page: what each model version was trained on."""

from __future__ import annotations

from app.db import session_scope
from app.services.users import create_admin
from tests.utils.users import PASSWORD, browser_login


def test_a_versions_data_summary_says_how_many_records_came_from_feedback(client) -> None:  # type: ignore[no-untyped-def]
    container = client.app.state.container
    with session_scope(container.session_factory) as session:
        create_admin(session, "root", PASSWORD)
    with container.session_factory() as session:
        container.versions.register_candidate(
            session, name="job1-a1-abcd", adapter_path=None, base_model="base",
            training_job_id=None, config={},
            data_summary={"records": 40, "feedback_records": 3, "per_source": {"feedback": 3}})
    browser_login(client, "root")
    page = client.get("/admin").text
    assert "40 records · 3 from caption feedback" in page
