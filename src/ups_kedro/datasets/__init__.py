"""Custom Kedro datasets: atomic JSON, memory-mapped arrays, self-describing checkpoints."""

from ups_kedro.datasets.array_dataset import ArrayBundle, ArrayDataset, ChunkedArray
from ups_kedro.datasets.checkpoint_dataset import CheckpointDataset
from ups_kedro.datasets.json_dataset import AtomicJSONDataset

__all__ = ["ArrayBundle", "ArrayDataset", "AtomicJSONDataset", "CheckpointDataset", "ChunkedArray"]
