"""
Distillation with torchdistill
==============================

Train a small CNN on the scikit-learn digits with torchdistill's DistillationBox and geomlat's GKD
(config: ``examples/torchdistill_gkd.yaml``). No download; about a minute on CPU::

    pip install -e ".[torchdistill]"    # torchdistill's training box also needs a working torchvision
    python examples/torchdistill_gkd.py

This example is shown but not run when the documentation is built: torchdistill's training box imports
torchvision, whose PyPI wheels do not import beside the CPU torch wheel (see the install guide).
The config's geomlat part is the ``GeomlatGKDLoss`` entry, registered by importing
``geomlat.integrations.torchdistill``.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from torchdistill.common import yaml_util
from torchdistill.core.distillation import get_distillation_box

import geomlat.integrations.torchdistill  # noqa: F401  (registers GeomlatGKDLoss and the label-variation losses)
from geomlat.models import build_model


def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y, *_ in loader)
    return hits / len(loader.dataset)


def main(config_path=Path(__file__).with_name("torchdistill_gkd.yaml"), teacher_epochs=5, seed=0):
    torch.manual_seed(seed)
    config = yaml_util.load_yaml_file(str(config_path))
    teacher, student = (build_model(config["models"][m]["key"], **config["models"][m]["kwargs"])
                        for m in ("teacher_model", "student_model"))
    train_set = config["datasets"]["digits/train"]
    # the teacher: a few epochs of plain cross-entropy
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(teacher_epochs):
        teacher.train()
        for x, y in torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            opt.step()
    box = get_distillation_box(teacher, student, config["datasets"], config["train"], torch.device("cpu"),
                               None, False, lr_factor=1)
    print(f"teacher accuracy {accuracy(teacher, box.val_data_loader):.3f}; loss: {box.criterion}")
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        for x, y, supp in box.train_data_loader:
            loss = box.forward_process(x, y, supp)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
        print(f"epoch {epoch + 1}: last loss {float(loss.detach()):.4f}, student accuracy {accuracy(student, box.val_data_loader):.3f}")
    return accuracy(student, box.val_data_loader)


if __name__ == "__main__":
    main()
