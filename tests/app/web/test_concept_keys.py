"""The concept pages with a key imported from a RePIC benchmark (``<black widow>``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.models import Concept, User
from app.services.rap_format import import_database
from tests.utils.repic_benchmark import four_concept_repository
from tests.utils.users import browser_register, csrf_field


def test_a_spaced_key_can_be_edited_on_its_page(client, container, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser_register(client)
    db, _ = four_concept_repository(tmp_path / "RePIC")
    with container.session_factory() as session:
        owner = session.scalar(select(User).where(User.username == "anya"))
        import_database(session, container.concepts, owner, db, None)
        widow = session.scalar(select(Concept).where(Concept.name == "black widow"))
    page = client.get(f"/concepts/{widow.id}/edit").text
    # The browser must not refuse to submit the name it was given.
    assert 'value="black widow"' in page and "No spaces" not in page
    r = client.post(
        f"/concepts/{widow.id}/edit",
        data={"name": "black widow", "description": "A spy.", "category": "human",
              "csrf_token": csrf_field(page)},
    )
    assert r.status_code == 200, r.text
    with container.session_factory() as session:
        edited = session.get(Concept, widow.id)
        assert (edited.name, edited.description) == ("black widow", "A spy.")
