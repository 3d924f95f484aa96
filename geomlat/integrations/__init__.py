"""Integrations with training frameworks, each an optional extra imported only on demand (``import geomlat``
imports none of them):

- :mod:`geomlat.integrations.lightning` (extra ``lightning``): :class:`GeometryMonitor`, a callback logging
  per-layer LGG metrics through the Trainer's loggers, and :class:`ObjectiveModule`, a LightningModule
  training any geomlat objective (e.g. :class:`geomlat.objectives.Distiller`).
- :mod:`geomlat.integrations.torchdistill` (extra ``torchdistill``): geomlat's losses in torchdistill's loss
  registry, for torchdistill YAML configs.

Hugging Face / timm models need no integration module: :class:`geomlat.LatentCapture`, the
:class:`~geomlat.objectives.Distiller` and the objectives select tensors from their ``ModelOutput`` / tuple outputs
(:func:`geomlat.select_output`).
"""
