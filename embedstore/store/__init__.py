"""The store: the Zarr schema and its opening, dataset ingest, description, integrity checks and digests."""

from embedstore.store.ingest import ingest
from embedstore.store.zarr_store import (
    CHUNK_CODECS,
    COMPRESSOR,
    DEFAULT_TILES_PER_SHARD,
    SAMPLE_TEXT_COLUMNS,
    SCHEMA_VERSION,
    SampleTable,
    Store,
    check_schema,
    completeness,
    feature_key,
    open_store,
    store_bytes,
    store_exists,
)

__all__ = ["CHUNK_CODECS", "COMPRESSOR", "DEFAULT_TILES_PER_SHARD", "SAMPLE_TEXT_COLUMNS", "SCHEMA_VERSION", "SampleTable", "Store",
           "check_schema", "completeness", "feature_key", "ingest", "open_store", "store_bytes", "store_exists"]
