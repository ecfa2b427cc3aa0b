"""Stage `split`: train/val indices (and the kept classes) of the dataset's training pool."""

from __future__ import annotations

import dataclasses

from netgeom.data.sources import content_digest, get_source
from netgeom.data.split import Split, make_split
from netgeom.io import atomic_write_json
from netgeom.layout import Layout
from netgeom.params import Params


def run_split(params: Params, layout: Layout) -> Split:
    data = params.data
    source = get_source(data.name, data)
    root = layout.data_root(data.root)
    pool = source.load(root, "train")
    split = make_split(
        source.info.name,
        pool.y,
        source.info.num_classes,
        val_size=data.val_size,
        seed=data.split_seed,
        stratified=data.stratified,
        classes=data.classes,
        class_seed=data.class_seed,
        train_size=data.train_size,
    )
    content = {name: content_digest(pool if name == "train" else source.load(root, name)) for name in source.info.splits}
    split = dataclasses.replace(split, content=content)
    atomic_write_json(layout.split_file, split.to_dict())
    return split
