"""Fake first names, drawn deterministically per key, for the name slots of training records.

Every epoch fills each record's name slots with new fake names (see :mod:`trainer.trl_dataset`),
so the model cannot memorise a name and has to copy the one it is given.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence

from app.ml.prompt import strip_name

#: Locales of the fake first names. Latin-script locales only by default: every tokenizer
#: splits them into few tokens, and the metric's whitespace tokenisation handles them.
DEFAULT_LOCALES: tuple[str, ...] = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT")

_NAME_OK = re.compile(r"^[^\W\d_][^\s<>/{}\[\],]*$")


class FakeNameSampler:
    """Fake first names from ``faker`` in several locales, drawn deterministically per key.

    A pool of distinct first names is drawn per locale once (seeded); :meth:`draw` picks from
    it with an RNG seeded by its key, so the same key always gives the same names. Names with
    spaces or characters that would break the ``<name>`` form are left out (a name with a
    space can never match one token in the metric).
    """

    def __init__(
        self, locales: Sequence[str] = DEFAULT_LOCALES, seed: int = 0, pool_size: int = 300
    ) -> None:
        from faker import Faker

        if not locales:
            raise ValueError("at least one fake-name locale is needed")
        self.locales = tuple(locales)
        self.seed = seed
        self.pools: dict[str, list[str]] = {}
        for locale in self.locales:
            faker = Faker(locale)
            faker.seed_instance(seed)
            names = {faker.first_name() for _ in range(pool_size)}
            pool = sorted(n for n in names if _NAME_OK.match(n))
            if not pool:
                raise ValueError(f"locale {locale!r} gave no usable first names")
            self.pools[locale] = pool

    def draw(self, key: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        """``k`` distinct names for ``key``, none equal (case-insensitively) to ``exclude``."""
        rng = random.Random(f"{self.seed}:{key}")
        banned = {strip_name(n).lower() for n in exclude}
        names: list[str] = []
        for _ in range(1000 * max(1, k)):
            if len(names) == k:
                break
            pool = self.pools[rng.choice(self.locales)]
            name = rng.choice(pool)
            if name.lower() not in banned:
                names.append(name)
                banned.add(name.lower())
        if len(names) < k:
            raise ValueError(f"could not draw {k} distinct fake names")
        return names
