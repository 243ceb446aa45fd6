"""The closed sets of values stored in rows and sent over the API (job, version and
evaluation states, evaluation settings, caption feedback).

They are ``StrEnum``: a member *is* its string, so rows, JSON and comparisons with plain
strings keep working.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class VersionState(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class EvaluationState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EvaluationSetting(StrEnum):
    """The paper's evaluation settings (REPIC_SPEC.md §4-5)."""

    SKIP = "skip"
    RETRIEVAL = "retrieval"
    WRONG = "wrong"


#: Settings the promotion gate may compare, in order of preference when several exist.
GATED_SETTINGS: tuple[EvaluationSetting, ...] = (
    EvaluationSetting.SKIP,
    EvaluationSetting.RETRIEVAL,
)


class Feedback(StrEnum):
    NONE = "none"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EDITED = "edited"


class SuggestionState(StrEnum):
    """A concept suggestion of the library's discovery job (app.services.library_discovery)."""

    OPEN = "open"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"
