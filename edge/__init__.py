"""geomesh edge: the public HTTP API (OGC API - Coverages, later WMS and jobs) in front of the scheduler."""
