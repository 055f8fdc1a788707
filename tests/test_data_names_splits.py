"""Class-name normalisation and seeded stratified index selection."""

from __future__ import annotations

import numpy as np
import pytest

from effv2birds.data import (BIRD_SPECIES, DataError, canonical_name, class_names_from, match_class_names,
                             name_key, per_class_indices, stratified_split, stratified_subsample)


@pytest.mark.parametrize("spelling", ["Ruddy Shelduck", "Ruddy-Shelduck", "ruddy_shelduck", " RUDDY  shelduck "])
def test_spellings_of_one_species_share_a_key(spelling):
    assert name_key(spelling) == "ruddy shelduck" and canonical_name(spelling) == "Ruddy Shelduck"


def test_names_are_kept_as_spelt_and_sorted_like_imagefolder():
    hyphens = [n.replace(" ", "-") for n in BIRD_SPECIES]
    names, ids = class_names_from(hyphens)
    assert names == sorted(hyphens) and "Asian-Green-Bee-Eater" in names
    assert [ids[h] for h in hyphens] == [names.index(h) for h in hyphens]
    # case-sensitive, as torchvision.datasets.ImageFolder: upper case sorts first
    assert class_names_from(["apple", "Banana", "cherry"])[0] == ["Banana", "apple", "cherry"]


def test_kaggle_spellings_across_splits_are_one_class_named_as_in_train():
    train = [n.replace(" ", "-") for n in BIRD_SPECIES]  # Birds_25 variant
    original = [n.replace("Breasted ", "Breasted-").replace("Headed ", "Headed-") for n in BIRD_SPECIES]
    names, ids = class_names_from(train, original)
    assert names == sorted(train) and len(names) == 25
    assert [ids[o] for o in original] == [ids[t] for t in train]


def test_one_split_with_two_spellings_of_a_key_is_an_error_naming_both():
    with pytest.raises(DataError, match="'cat-1' and 'cat_1'.*rename one"):
        class_names_from(["cat_1", "cat-1", "dog"])
    with pytest.raises(DataError, match="'My Cat' and 'my_cat'"):
        class_names_from(["dog"], ["my_cat", "My Cat"])
    with pytest.raises(DataError, match="empty"):
        canonical_name(" _-_ ")


def test_match_class_names_exact_then_by_key():
    known = ["Hoopoe", "Ruddy-Shelduck", "cat_1", "cat-1"]
    assert match_class_names(["Ruddy Shelduck", "hoopoe", "cat-1", "Dodo"], known) == ([1, 0, 3, None], ["Dodo"])
    with pytest.raises(DataError, match="several known classes"):
        match_class_names(["Cat 1"], known)


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
