"""The DCGAN demo and the training-loop tools, apart from the scoring core.

``synthetic`` (Gaussian mixtures with known modes) -> ``models`` (a DCGAN) -> ``training`` (the training loop and
:class:`~fastndb.demo.training.CollapseMonitor`) -> ``runner`` (what ``fastndb demo`` runs).
"""
