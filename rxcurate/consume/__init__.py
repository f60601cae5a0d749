"""Consumers of published releases, one module each (import the functions from the modules):

- :mod:`rxcurate.consume.pull`: ``pull(target, parts, ...)`` fetches a pinned version into a verified cache;
  ``load(target, version, part)`` (also ``rxcurate.load``) returns a ``datasets.Dataset`` or a pandas table.
- :mod:`rxcurate.consume.wells`: ``Wells(folder)`` (also ``rxcurate.load(target, version, "wells")``) yields
  ``(array[6, H, W] uint8, metadata row)`` per well; ``.torch()`` is a torch ``IterableDataset``.
- :mod:`rxcurate.consume.submit`: ``submit(target, benchmark, embeddings, ...)`` validates, scores with the
  release's published benchmark definition and records the result on the leaderboard.
- :mod:`rxcurate.consume.leaderboard`: ``leaderboard(target, benchmark)`` ranks the recorded results.
"""
