"""Side-by-side benchmarks of geomlat's geometry against the authors' approach, faiss and the matmul floor.

Run with ``python -m benchmarks`` (writes ``benchmarks/results.md``, ``benchmarks/results.json`` and
``figures/bench/scaling.png``). Every number is a ratio of medians measured in one run, the compared
sides interleaved (A, B, A, B, ...) after a warm-up so that machine load affects both alike.
"""
