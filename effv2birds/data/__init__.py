"""Data layer: sources -> ``datasets.DatasetDict`` -> pre-resized uint8 cache -> batched loader ->
batch-wise augmentation on the training device.

>>> from effv2birds.data import load_image_dataset, cache_split, make_loader, BatchAugment
>>> import tempfile
>>> ds = load_image_dataset("synthetic", synthetic_size=100)
>>> cached = cache_split(ds["train"], 32, cache_dir=tempfile.mkdtemp())
>>> images, labels = next(iter(make_loader(cached, 16, shuffle=True, seed=0)))
>>> x, y = BatchAugment(cached.num_classes, mean=(0.5,) * 3, std=(0.5,) * 3)(images, labels)
>>> tuple(x.shape)
(16, 3, 32, 32)
"""

from .augment import BatchAugment, to_model_input
from .cache import CachedSplit, cache_key, cache_split, default_cache_dir
from .decode import check_image, decode_resize, open_rgb
from .dedup import (NEAR_DUPLICATE_DISTANCE, dhash, dihedral_hashes, drop_cross_split_duplicates, hash_images,
                    near_duplicates, nearest_hashes, read_train_hashes, write_train_hashes)
from .files import expand_image_paths
from .loader import TensorPairDataset, make_loader
from .names import BIRD_SPECIES, DataError, canonical_name, class_names_from, match_class_names, name_key
from .sources import data_report, load_image_dataset, skipped_files
from .splits import per_class_indices, stratified_split, stratified_subsample
from .synthetic import FINE_TWINS, draw_birds, synthetic_birds

__all__ = [
    "BIRD_SPECIES", "BatchAugment", "CachedSplit", "DataError", "FINE_TWINS", "NEAR_DUPLICATE_DISTANCE",
    "TensorPairDataset", "cache_key", "cache_split", "canonical_name", "check_image", "class_names_from",
    "data_report", "decode_resize", "default_cache_dir", "dhash", "dihedral_hashes", "draw_birds",
    "drop_cross_split_duplicates", "expand_image_paths", "hash_images", "load_image_dataset", "make_loader",
    "match_class_names", "name_key", "near_duplicates", "nearest_hashes", "open_rgb", "per_class_indices",
    "read_train_hashes", "skipped_files", "stratified_split", "stratified_subsample", "synthetic_birds",
    "to_model_input", "write_train_hashes",
]
