"""Asynchronous jobs: their states, their tables and the store that keeps them."""
