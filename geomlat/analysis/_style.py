"""The one palette of every geomlat figure: series (classes, layers, networks, methods) that a reader,
a color-blind one included, tells apart by color and, from the second to the tenth series, by marker too.

``PALETTE`` is Okabe & Ito's color-blind-safe set (blue, orange, bluish green, reddish purple, sky blue,
vermillion, black, yellow) with a grey and a brown, ordered so that neighbors in the list differ most:
the orange and the vermillion, alike to many readers, are the 2nd and 6th series, never both among the
first five. Ten series get ten colors and ten markers; more cycle the colors with shifted markers.
"""
from __future__ import annotations

PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#000000",  # black
    "#999999",  # grey
    "#8C510A",  # brown
    "#F0E442",  # yellow (last: faint on white)
)

#: one marker per series, filled shapes that stay distinct at small sizes
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", "h")


def series_styles(n: int) -> list[tuple[str, str]]:
    """``n`` distinct ``(color, marker)`` pairs: ``PALETTE[i % 10]`` with ``MARKERS[(i + i // 10) % 10]``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number of series must be a non-negative int, got {n!r}")
    m = len(PALETTE)
    return [(PALETTE[i % m], MARKERS[(i + i // m) % len(MARKERS)]) for i in range(n)]
