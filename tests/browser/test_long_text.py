"""Long unbroken text (a caption of 1024 tokens with no space, a job log of long lines) wraps
inside its box: the page never scrolls sideways, at desktop or phone width."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.models import Job, User
from tests.browser.conftest import new_context
from tests.support.fake_vllm import FakeVLLM
from tests.utils.browser import (
    DESKTOP,
    PHONE,
    database,
    login,
    make_admin,
    overflow_px,
    register_api,
)
from tests.utils.images import FIXTURES

pytestmark = pytest.mark.browser
DOG = FIXTURES / "dreambooth" / "dog"
#: What a 1024-token caption of one unbroken "word" looks like to the page.
UNBROKEN = "Ġ" + "x" * 6000


@pytest.fixture
def fake_vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM(completion_text=UNBROKEN) as server:
        yield server


@pytest.fixture
def settings(settings_factory, fake_vllm):  # type: ignore[no-untyped-def]
    return settings_factory(caption={"backend": "openai", "openai_base_urls": [fake_vllm.base_url],
                                     "model": fake_vllm.model, "max_retries": 0, "timeout_s": 10})


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def sized(request, browser, live_server, csp_violations):  # type: ignore[no-untyped-def]
    context = new_context(browser, live_server.url, csp_violations, viewport=request.param)
    pg = context.new_page()
    yield pg
    context.close()


def test_a_long_unbroken_caption_wraps_in_the_result_and_in_history(sized, live_server) -> None:  # type: ignore[no-untyped-def]
    register_api(live_server.url, "anya")
    login(sized, "anya")
    sized.goto("/caption")
    sized.set_input_files("#caption-image", str(DOG / "04.jpg"))
    sized.click("#caption-submit")
    sized.wait_for_selector("#caption-result:not([hidden])")
    assert UNBROKEN[:50] in sized.inner_text("#caption-text")
    assert overflow_px(sized) <= 0
    sized.reload()
    assert sized.locator("#history [data-caption-id]").count() == 1
    assert overflow_px(sized) <= 0


def test_a_job_log_of_long_lines_wraps(sized, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings, "root")
    with database(settings) as session:
        root = session.query(User).filter_by(username="root").one()
        job = Job(kind="training", state="failed", queue="gpu", created_by_id=root.id,
                  log_tail="step 1 " + "=" * 3000 + "\n" + "/data/runs/" + "a" * 2000,
                  error="RuntimeError: " + "b" * 2000)
        session.add(job)
        session.flush()
        job_id = job.id
    login(sized, "root")
    sized.goto(f"/admin/jobs/{job_id}")
    assert "=" * 100 in sized.inner_text(".job-log")
    assert overflow_px(sized) <= 0
    sized.goto("/admin")
    assert overflow_px(sized) <= 0
