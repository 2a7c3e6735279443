"""geomesh transformers: gRPC servers that transform one granule at a time."""
