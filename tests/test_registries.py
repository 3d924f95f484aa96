"""Every name -> object table of geomlat is a :class:`geomlat.registry.Registry`: one error for an unknown name
(listing the registered ones), a duplicate name refused, the lookup functions of each module raising the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geomlat.analysis.measures import MEASURES
from geomlat.analysis.similarity import SIMILARITIES
from geomlat.data import DATASETS, load_dataset
from geomlat.distances import DISTANCES, graph_distance, register_distance
from geomlat.graphs import latent_graph
from geomlat.kernels import KERNELS, get_kernel
from geomlat.losses import LOSSES, get_loss
from geomlat.models import MODELS, build_model, register_model
from geomlat.registry import Registry, UnknownNameError
from geomlat.robustness import CORRUPTIONS, corrupt, to_uint8

REGISTRIES = {"kernel": KERNELS, "loss": LOSSES, "graph distance": DISTANCES, "model": MODELS, "dataset": DATASETS,
              "corruption": CORRUPTIONS, "measure": MEASURES, "similarity measure": SIMILARITIES}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_each_table_is_a_registry_with_one_error(kind):
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry) and registry.kind == kind and len(registry) > 0
    with pytest.raises(UnknownNameError) as info:
        registry["no_such_name"]
    assert str(info.value) == f"unknown {kind} 'no_such_name'; registered: {sorted(registry)}"
    name = next(iter(registry))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(name, registry[name])
    assert registry[name] is not None


def test_lookup_functions_raise_the_registry_error():
    x = torch.rand(8, 3)
    g = latent_graph(x, k=3)
    calls = [lambda: get_kernel("nope"), lambda: get_loss("nope"), lambda: build_model("nope"),
             lambda: load_dataset("nope"), lambda: graph_distance(g, g, "nope"),
             lambda: corrupt(np.zeros((1, 3, 8, 8)), "nope", 1, 0), lambda: to_uint8(np.zeros(2), "nope")]
    for call in calls:
        with pytest.raises(UnknownNameError, match="unknown .*'nope'; registered: "):
            call()


def test_register_model_and_distance_are_decorators():
    @register_model("tiny_test_model")
    def tiny(num_classes: int = 3):
        return torch.nn.Linear(4, num_classes)

    @register_distance("zero_test")
    def zero(g1, g2):
        return torch.zeros(())

    try:
        assert build_model("tiny_test_model", num_classes=5).out_features == 5
        assert float(graph_distance(latent_graph(torch.rand(6, 2), k=2), latent_graph(torch.rand(6, 2), k=2),
                                    "zero_test")) == 0.0
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny_test_model", tiny)
    finally:
        MODELS.unregister("tiny_test_model")
        DISTANCES.unregister("zero_test")
    assert "tiny_test_model" not in MODELS and "zero_test" not in DISTANCES
