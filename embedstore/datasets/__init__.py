"""Dataset adapters: native layouts (PanNuke, CoNIC, CytoDArk0, CoNSeP, MoNuSeg, a plain folder, synthetic)
turned into fixed-size labelled tiles for the store."""

from embedstore.datasets.base import DatasetInfo, Tile, TileDataset
from embedstore.datasets.registry import dataset_options, get_dataset, list_datasets

__all__ = ["DatasetInfo", "Tile", "TileDataset", "dataset_options", "get_dataset", "list_datasets"]
