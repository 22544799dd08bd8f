"""The scoring core, private: pure functions on tensors, in the order the data flows.

``inputs`` (validation, zero-copy wrapping; ``files`` for the command line) -> ``features`` (the value-range
convention, dimension subset, whitening) -> ``bins`` (fitting: ``kmeans`` with ``sampling`` and ``collectives``
for order-free, distributed fits) -> ``backends`` (nearest-bin assignment, on ``fastndb.kernels``) ->
``statistics`` -> ``results``. ``options`` defines every option once; ``cache`` keys fitted bins once, in memory
and on disk; ``birthday`` is the pairwise test on the same kernels. Nothing here is public API: the public names
are those of ``fastndb.__all__``.
"""
