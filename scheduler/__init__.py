"""geomesh scheduler: turns a DataRequest into work for transformers and relays the results."""
