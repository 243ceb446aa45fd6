"""Wire model-backed services into a container according to its settings.

The foundation has none yet; retrieval, captioning and jobs add theirs here.
"""

from __future__ import annotations

from app.container import Container


def setup_services(container: Container) -> None:
    """Attach the optional services configured for this process."""
    return None
