"""A small labeled text set built offline: topic sentences from templates (no download).

Each sentence joins a topic clause (a subject, a verb phrase and an object drawn from the topic's own word
lists) with 0 to 3 neutral clauses drawn from lists shared by every topic ("late last night", "as my
neighbor told me", ...). The topic decides the words; the neutral clauses decide the length, independently
of the topic: a representation whose geometry follows sentence length (e.g. token features flattened with
their padding) then mixes the classes, while one that follows meaning separates them.

Example:
    >>> texts, labels, names = topic_sentences(n_per_class=2, seed=0)
    >>> len(texts), labels.tolist(), names[:2]
    (12, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], ['sports', 'cooking'])
"""
from __future__ import annotations

import numpy as np
from .._params import check_int


TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "sports": (["the striker", "our goalkeeper", "the young sprinter", "the tennis champion", "the coach"],
               ["scored in", "trained hard for", "lost the final of", "celebrated winning", "was injured during"],
               ["the league match", "the marathon", "the world cup qualifier", "the derby", "the olympic heats"]),
    "cooking": (["the chef", "my grandmother", "the baker", "a home cook", "the pastry team"],
                ["slowly simmered", "seasoned", "baked", "chopped and fried", "served"],
                ["the tomato sauce", "a loaf of sourdough", "the garlic and onions", "a chocolate cake",
                 "the vegetable soup"]),
    "weather": (["a cold front", "the storm", "heavy rain", "the heatwave", "thick fog"],
                ["swept across", "flooded", "settled over", "brought snow to", "cooled down"],
                ["the northern coast", "the valley", "the mountain towns", "the airport", "the whole region"]),
    "technology": (["the new processor", "the software update", "the startup", "the research lab", "the phone"],
                   ["doubled the speed of", "introduced a bug in", "released", "encrypted", "crashed while running"],
                   ["the operating system", "the database server", "a neural network", "the mobile app",
                    "the cloud service"]),
    "music": (["the orchestra", "the jazz pianist", "a rock band", "the choir", "the violinist"],
              ["performed", "recorded", "rehearsed", "composed", "improvised on"],
              ["a symphony", "the new album", "an old ballad", "the concerto", "a folk song"]),
    "finance": (["the central bank", "the investors", "the stock market", "the accountant", "the pension fund"],
                ["raised", "lost money on", "audited", "bought shares of", "cut the interest on"],
                ["the government bonds", "the quarterly budget", "the mortgage rates", "the tech stocks",
                 "the savings accounts"]),
}

#: clauses shared by every topic: they change the length, never the class
NEUTRAL = ["late last night", "as my neighbor told me", "according to the evening news", "once again",
           "for the second time this year", "to everyone's surprise", "on a quiet sunday morning",
           "just before the holidays", "in the middle of the week", "while we were away"]


def topic_sentences(n_per_class: int = 60, seed: int = 0, max_extra_clauses: int = 3) -> tuple[list[str], np.ndarray, list[str]]:
    """``n_per_class`` sentences of each of the 6 topics of :data:`TOPICS`, deterministic given ``seed``.

    Returns:
        ``(texts, labels (N,) int64, class_names)`` with N = 6 * n_per_class, sorted by class.
    """
    check_int(n_per_class, "n_per_class", low=1)
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, (subjects, verbs, objects) in enumerate(TOPICS.values()):
        for _ in range(n_per_class):
            core = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
            extra = rng.choice(NEUTRAL, size=rng.integers(0, max_extra_clauses + 1), replace=False)
            texts.append((", ".join([core, *extra]) + ".").capitalize())
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64), list(TOPICS)
