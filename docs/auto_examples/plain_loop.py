"""
Distillation in your own training loop
======================================

geomlat objectives are plain ``nn.Module`` objects with ``forward(x, y) -> (output, {name: loss})``.

A teacher MLP (``Supervised``) then a student distilled from it with GKD (``Distiller``), each trained by the
same few lines of plain PyTorch (AdamW) on the scikit-learn digits. No geomlat engine, no download; ~5 s on
CPU::

    python examples/plain_loop.py
"""
import torch
from sklearn.datasets import load_digits
from torch import nn

from geomlat.losses import GKD
from geomlat.objectives import Distiller, Supervised


def fit(objective: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 20, lr: float = 3e-3) -> list[dict]:
    """The plain loop: any objective, AdamW, shuffled batches of 64; returns each epoch's mean loss terms."""
    params = [p for p in objective.parameters() if p.requires_grad]  # a Distiller's teacher is frozen
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    history = []
    for epoch in range(epochs):
        objective.train()  # a Distiller keeps its teacher in eval mode
        sums = {}
        for idx in torch.randperm(len(y)).split(64):
            _, losses = objective(x[idx], y[idx])  # (output, {name: scalar loss})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            sums = {k: sums.get(k, 0.0) + v.detach() * len(idx) for k, v in losses.items()}
        history.append({k: float(v) / len(y) for k, v in sums.items()})
    return history


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 10))


def main(epochs: int = 20, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(y))
    train, test = perm[:1300], perm[1300:]
    teacher, student = mlp(128), mlp(32)
    fit(Supervised(teacher), x[train], y[train], epochs)
    # GKD on the post-ReLU features of layer "3" (teacher, student): graphs of the batch matched
    distiller = Distiller(student, teacher, terms={"gkd": (GKD(), 25.0)}, pairs=[("3", "3")])
    history = fit(distiller, x[train], y[train], epochs)
    result = {"teacher_acc": accuracy(teacher, x[test], y[test]), "student_acc": accuracy(student, x[test], y[test]),
              "history": history}
    print({k: v for k, v in result.items() if k != "history"}, "first/last epoch:", history[0], history[-1])
    return result


if __name__ == "__main__":
    result = main()
    # %%
    # The loss terms of the distillation, epoch by epoch (the task term and the GKD term).
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for term in result["history"][0]:
        ax.plot([h[term] for h in result["history"]], label=term)
    ax.set(xlabel="epoch", ylabel="mean loss", yscale="log", title="student: task and GKD terms")
    ax.legend()
    fig.tight_layout()
