"""The data stages, in pipeline order: reading documents (`documents`, the one reader), near-duplicate
removal (`dedup`, with its in-memory corpus and output writer in `dedup_io`), encoding a corpus into
token shards (`tokenize`, `shards`), and reading shards back as training batches (`dataset`).

Nothing is imported here, so `import fastllm.data.documents` does not pay for torch.
"""
