"""Tools over study kinds: they run a kind's per-run hooks (:class:`geomlat.studies.StudyKind`) in another
setting than its study, and name no kind.

- :mod:`.tuning`: the validation grid of a spec's ``[tune]`` table (``geomlat study NAME --tune``).
- :mod:`.lv_diagnosis`: the label-variation 2-D diagnosis of ``make tune-embed``.
"""
