"""Data: read sources, train tokenizers, write and read token shards, batch them."""
