"""Class-name normalisation and seeded stratified index selection."""

from __future__ import annotations

import numpy as np
import pytest

from effv2birds.data import (BIRD_SPECIES, DataError, canonical_name, class_names_from, per_class_indices,
                             stratified_split, stratified_subsample)


@pytest.mark.parametrize("spelling", ["Ruddy Shelduck", "Ruddy-Shelduck", "ruddy_shelduck", " RUDDY  shelduck "])
def test_spellings_of_one_species_agree(spelling):
    assert canonical_name(spelling) == "Ruddy Shelduck"


def test_all_25_species_in_both_kaggle_spellings_map_to_the_same_ids():
    original = [n.replace("Breasted ", "Breasted-").replace("Headed ", "Headed-") for n in BIRD_SPECIES]
    hyphens = [n.replace(" ", "-") for n in BIRD_SPECIES]
    names_a, ids_a = class_names_from(original)
    names_b, ids_b = class_names_from(hyphens)
    assert names_a == names_b == sorted(BIRD_SPECIES) and len(names_a) == 25
    assert [ids_a[o] for o in original] == [ids_b[h] for h in hyphens]


def test_unknown_names_merge_by_key_and_keep_their_words():
    names, ids = class_names_from(["my_cat", "My Cat", "dog"])
    assert len(names) == 2 and ids["my_cat"] == ids["My Cat"] != ids["dog"]
    with pytest.raises(DataError, match="empty"):
        canonical_name(" _-_ ")


def test_stratified_split_is_disjoint_complete_and_proportional():
    labels = np.repeat(np.arange(5), [40, 30, 20, 10, 3])
    tr, va, te = stratified_split(labels, 0.1, 0.2, seed=0)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(labels)))
    for c, n in enumerate([40, 30, 20, 10, 3]):
        assert (labels[te] == c).sum() == max(1, round(n * 0.2))
        assert (labels[tr] == c).sum() >= 1
    again = stratified_split(labels, 0.1, 0.2, seed=0)
    other = stratified_split(labels, 0.1, 0.2, seed=1)
    assert all((a == b).all() for a, b in zip(again, (tr, va, te)))
    assert not (other[1].tolist() == va.tolist())
    with pytest.raises(ValueError, match="sum below 1"):
        stratified_split(labels, 0.6, 0.5)


def test_per_class_and_subsample():
    labels = np.repeat(np.arange(3), [50, 5, 20])
    keep = per_class_indices(labels, 10, seed=0)
    assert np.bincount(labels[keep]).tolist() == [10, 5, 10]
    sub = stratified_subsample(labels, 15, seed=0)
    assert len(sub) == 15 and np.bincount(labels[sub]).tolist() == [10, 1, 4]
    assert len(stratified_subsample(labels, 1000)) == len(labels)
