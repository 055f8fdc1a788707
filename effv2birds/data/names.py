"""Class-name normalisation: one canonical name (and so one label id) per species in every layout.

The Kaggle "25 Indian bird species" data spells the same class differently depending on the
variant: ``Ruddy Shelduck`` (original, spaces), ``Ruddy-Shelduck`` (``Birds_25``, hyphens), and users
rename folders (``ruddy_shelduck``). :func:`canonical_name` maps all of them to one spelling, and
label ids are the position in the sorted list of canonical names, so a model trained on one
layout can be evaluated on another.

>>> canonical_name("ruddy_shelduck")
'Ruddy Shelduck'
>>> canonical_name("White-Breasted Waterhen") == canonical_name("white breasted waterhen")
True
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["BIRD_SPECIES", "canonical_name", "name_key", "class_names_from", "DataError"]


class DataError(ValueError):
    """A data source cannot be used; the message names the problem and how to fix it."""


# The 25 species of the Kaggle "25 Indian bird species" data, in canonical spelling.
BIRD_SPECIES: tuple[str, ...] = (
    "Asian Green Bee Eater", "Brown Headed Barbet", "Cattle Egret", "Common Kingfisher", "Common Myna",
    "Common Rosefinch", "Common Tailorbird", "Coppersmith Barbet", "Forest Wagtail", "Gray Wagtail",
    "Hoopoe", "House Crow", "Indian Grey Hornbill", "Indian Peacock", "Indian Pitta", "Indian Roller",
    "Jungle Babbler", "Northern Lapwing", "Red Wattled Lapwing", "Ruddy Shelduck", "Rufous Treepie",
    "Sarus Crane", "White Breasted Kingfisher", "White Breasted Waterhen", "White Wagtail",
)

_SEPARATORS = re.compile(r"[\s_\-.]+")


def name_key(name: str) -> str:
    """The comparison key of a class name: lower case, words joined by one space.

    >>> name_key("  White-Breasted__Waterhen ")
    'white breasted waterhen'
    """
    return " ".join(w for w in _SEPARATORS.split(str(name).strip().lower()) if w)


_KNOWN = {name_key(n): n for n in BIRD_SPECIES}


def canonical_name(name: str) -> str:
    """The canonical spelling of a class name.

    Known species get their entry in :data:`BIRD_SPECIES`; any other name keeps the case of the
    words it was given, with spaces instead of ``-``/``_`` runs.

    >>> canonical_name("Indian-Peacock"), canonical_name("my_cat")
    ('Indian Peacock', 'my cat')
    """
    key = name_key(name)
    if not key:
        raise DataError(f"class name {name!r} is empty after normalisation; rename the folder")
    if key in _KNOWN:
        return _KNOWN[key]
    return " ".join(w for w in _SEPARATORS.split(str(name).strip()) if w)


def class_names_from(raw_names: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted canonical class names and a map raw name -> label id.

    Names that normalise to the same key (``Ruddy Shelduck`` and ``ruddy-shelduck``) share one id.

    >>> names, ids = class_names_from(["Ruddy-Shelduck", "Hoopoe", "ruddy shelduck"])
    >>> names, ids["ruddy shelduck"]
    (['Hoopoe', 'Ruddy Shelduck'], 1)
    """
    raw = sorted(set(raw_names))
    by_key: dict[str, str] = {}
    for r in raw:
        by_key.setdefault(name_key(r), canonical_name(r))
    names = sorted(set(by_key.values()), key=lambda n: (name_key(n), n))
    index = {n: i for i, n in enumerate(names)}
    return names, {r: index[by_key[name_key(r)]] for r in raw}
