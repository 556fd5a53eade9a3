"""Sharing stores: pack to one zip, open remote stores with a local chunk cache, push to / pull from the Hub."""

from embedstore.share.cache import CachedStore, default_cache_dir
from embedstore.share.hub import PushPlan, pull, push, push_plan
from embedstore.share.pack import pack_store, unpack_store
from embedstore.share.remote import RemoteZip, open_remote

__all__ = [
    "CachedStore",
    "PushPlan",
    "RemoteZip",
    "default_cache_dir",
    "open_remote",
    "pack_store",
    "pull",
    "push",
    "push_plan",
    "unpack_store",
]
