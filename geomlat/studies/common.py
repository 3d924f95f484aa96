"""Spec helpers shared by the study kinds."""
from __future__ import annotations

from typing import Any

from ..data import DATASETS
from .spec import Fields


def data_fields(fields: Fields) -> dict[str, Any]:
    """The ``data`` table of a spec: ``{"name", "seed", "options"}`` (name among the registered data sets)."""
    f = fields.fields("data")
    out = {"name": f.str("name", choices=DATASETS), "seed": f.int("seed", 0, minimum=0), "options": f.table_("options", {})}
    f.finish()
    return out
