"""Store -> training batches: the epoch plan, the block reader with its target cache, collation."""
