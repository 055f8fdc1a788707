"""Class names: labels are the names in the data, exactly as spelt there; a spelling-blind key matches them.

A class is called what its folder (or the data set's ``ClassLabel``) calls it: a run trained on
``Asian-Green-Bee-Eater/`` answers ``Asian-Green-Bee-Eater``. :func:`name_key` (lower case, ``-``/``_``/
spaces alike) is used only to *match* names that differ in spelling: the Kaggle "25 Indian bird
species" variants spell one species ``Ruddy Shelduck`` (original) and ``Ruddy-Shelduck``
(``Birds_25``), so a split or a later evaluation folder in one spelling still finds the class of the
other. Two different folders of one split that share a key (``cat_1`` and ``cat-1``) are an error,
never merged.

>>> name_key("Ruddy-Shelduck") == name_key("ruddy shelduck")
True
>>> class_names_from(["Ruddy-Shelduck", "Hoopoe"], ["Ruddy Shelduck"])[0]
['Hoopoe', 'Ruddy-Shelduck']
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from effv2birds.errors import Effv2birdsError

__all__ = ["BIRD_SPECIES", "canonical_name", "name_key", "class_names_from", "match_class_names", "DataError"]


class DataError(Effv2birdsError, ValueError):
    """A data source cannot be used; the message names the problem and how to fix it."""


# The 25 species of the Kaggle "25 Indian bird species" data, spelt with spaces (as the synthetic birds are).
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
    """A spelling with spaces: the :data:`BIRD_SPECIES` entry for a known species, else the given
    words joined by spaces. For comparing and grouping names; labels keep the data's own spelling.

    >>> canonical_name("Indian-Peacock"), canonical_name("my_cat")
    ('Indian Peacock', 'my cat')
    """
    key = name_key(name)
    if not key:
        raise DataError(f"class name {name!r} is empty after normalisation; rename the folder")
    if key in _KNOWN:
        return _KNOWN[key]
    return " ".join(w for w in _SEPARATORS.split(str(name).strip()) if w)


def _keys_of_split(names: Iterable[str]) -> dict[str, str]:
    """key -> name for one split; two names with one key are an error (they would merge silently)."""
    by_key: dict[str, str] = {}
    for name in sorted(set(map(str, names))):
        key = name_key(name)
        if not key:
            raise DataError(f"class name {name!r} is empty after normalisation; rename the folder")
        if key in by_key:
            raise DataError(
                f"classes {by_key[key]!r} and {name!r} differ only in case or separators, so it is unclear whether "
                "they are one class or two; rename one of them (or merge the folders)"
            )
        by_key[key] = name
    return by_key


def class_names_from(*splits: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Class names and a map raw name -> label id, from the raw names of each split (train first).

    Names are kept as spelt; across splits, spellings with the same :func:`name_key` are one class,
    named as in the first split that has it. The order is torchvision ``ImageFolder``'s (sorted,
    case-sensitive), so label ids match a ``torchvision.datasets.ImageFolder`` over the training folder.

    >>> names, ids = class_names_from(["Ruddy-Shelduck", "Hoopoe"], ["Ruddy Shelduck", "hoopoe"])
    >>> names, ids["Ruddy Shelduck"], ids["hoopoe"]
    (['Hoopoe', 'Ruddy-Shelduck'], 1, 0)
    >>> class_names_from(["cat_1", "cat-1"])                          # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    effv2birds.data.names.DataError: classes 'cat-1' and 'cat_1' differ only in case or separators, ...
    """
    display: dict[str, str] = {}  # key -> the first split's spelling
    raw_key: dict[str, str] = {}
    for split in splits:
        for key, name in _keys_of_split(split).items():
            display.setdefault(key, name)
            raw_key[name] = key
    names = sorted(display.values())
    index = {name: i for i, name in enumerate(names)}
    return names, {raw: index[display[key]] for raw, key in raw_key.items()}


def match_class_names(names: Sequence[str], known: Sequence[str]) -> tuple[list[int | None], list[str]]:
    """For each of ``names``, the index of the same class in ``known`` (exact spelling first, then
    :func:`name_key`), or ``None``; and the names that ``known`` does not have.

    >>> match_class_names(["Ruddy Shelduck", "Dodo", "Hoopoe"], ["Hoopoe", "Ruddy-Shelduck"])
    ([1, None, 0], ['Dodo'])
    """
    exact = {n: i for i, n in enumerate(known)}
    by_key: dict[str, list[int]] = {}
    for i, n in enumerate(known):
        by_key.setdefault(name_key(n), []).append(i)
    out: list[int | None] = []
    for name in names:
        if name in exact:
            out.append(exact[name])
            continue
        hits = by_key.get(name_key(name), [])
        if len(hits) > 1:
            raise DataError(f"class {name!r} matches several known classes "
                            f"({', '.join(repr(known[i]) for i in hits)}); rename the folder to one of them exactly")
        out.append(hits[0] if hits else None)
    return out, [n for n, i in zip(names, out) if i is None]
