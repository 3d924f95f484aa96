"""Write the small intersphinx inventories shipped in this folder (run: ``python docs/_inventories/build.py``).

The documentation builds offline (the build machine and CI reach no documentation site), so the external names
that geomlat's signatures and docstrings refer to are listed here with their address in each project's
published documentation (the projects' URL schemes as of 2025). Where autodoc sees a class under its defining
module (``torch.nn.modules.module.Module``, ``torch_geometric.data.data.Data``), that name is listed too, as an
alias of the public one. Add a line when a docstring names a new external object (the nitpicky build says which).
"""
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (title, version, [(public name, role, uri relative to the project's base, aliases...)])
PROJECTS = {
    "python": ("Python", "3", [
        ("pathlib.Path", "class", "library/pathlib.html#pathlib.Path"),
        ("contextlib.AbstractContextManager", "class",
         "library/contextlib.html#contextlib.AbstractContextManager"),
        ("collections.abc.Mapping", "class", "library/collections.abc.html#collections.abc.Mapping"),
        ("collections.abc.Iterator", "class", "library/collections.abc.html#collections.abc.Iterator"),
        ("collections.abc.Iterable", "class", "library/collections.abc.html#collections.abc.Iterable"),
        ("collections.abc.Callable", "class", "library/collections.abc.html#collections.abc.Callable"),
        ("collections.abc.Sequence", "class", "library/collections.abc.html#collections.abc.Sequence"),
        ("typing.Any", "data", "library/typing.html#typing.Any"),
        ("pickle.Unpickler", "class", "library/pickle.html#pickle.Unpickler"),
        ("ValueError", "exception", "library/exceptions.html#ValueError"),
        ("TypeError", "exception", "library/exceptions.html#TypeError"),
        ("KeyError", "exception", "library/exceptions.html#KeyError"),
        ("RuntimeError", "exception", "library/exceptions.html#RuntimeError"),
        ("FileNotFoundError", "exception", "library/exceptions.html#FileNotFoundError"),
        ("Exception", "exception", "library/exceptions.html#Exception"),
        ("int", "class", "library/functions.html#int"),
        ("float", "class", "library/functions.html#float"),
        ("str", "class", "library/stdtypes.html#str"),
        ("bool", "class", "library/functions.html#bool"),
        ("dict", "class", "library/stdtypes.html#dict"),
        ("list", "class", "library/stdtypes.html#list"),
        ("tuple", "class", "library/stdtypes.html#tuple"),
        ("object", "class", "library/functions.html#object"),
        ("None", "data", "library/constants.html#None"),
    ]),
    "torch": ("PyTorch", "2", [
        ("torch.Tensor", "class", "tensors.html#torch.Tensor", "Tensor"),
        ("torch.device", "class", "tensor_attributes.html#torch.device"),
        ("torch.dtype", "class", "tensor_attributes.html#torch.dtype"),
        ("torch.Size", "class", "size.html#torch.Size"),
        ("torch.Generator", "class", "generated/torch.Generator.html#torch.Generator", "torch._C.Generator"),
        ("torch.nn.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module",
         "torch.nn.modules.module.Module", "nn.Module"),
        ("torch.nn.Parameter", "class", "generated/torch.nn.parameter.Parameter.html",
         "torch.nn.parameter.Parameter"),
        ("torch.nn.Sequential", "class", "generated/torch.nn.Sequential.html#torch.nn.Sequential",
         "torch.nn.modules.container.Sequential"),
        ("torch.nn.functional.cross_entropy", "function",
         "generated/torch.nn.functional.cross_entropy.html#torch.nn.functional.cross_entropy"),
        ("torch.nn.utils.clip_grad_norm_", "function",
         "generated/torch.nn.utils.clip_grad_norm_.html#torch.nn.utils.clip_grad_norm_"),
        ("torch.utils.data.Dataset", "class", "data.html#torch.utils.data.Dataset",
         "torch.utils.data.dataset.Dataset"),
        ("torch.utils.data.TensorDataset", "class", "data.html#torch.utils.data.TensorDataset",
         "torch.utils.data.dataset.TensorDataset"),
        ("torch.utils.data.DataLoader", "class", "data.html#torch.utils.data.DataLoader",
         "torch.utils.data.dataloader.DataLoader"),
        ("torch.optim.Optimizer", "class", "optim.html#torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"),
        ("torch.optim.lr_scheduler.LRScheduler", "class",
         "generated/torch.optim.lr_scheduler.LRScheduler.html#torch.optim.lr_scheduler.LRScheduler"),
        ("torch.autocast", "class", "amp.html#torch.autocast", "torch.amp.autocast_mode.autocast"),
        ("torch.amp.GradScaler", "class", "amp.html#torch.amp.GradScaler", "torch.amp.grad_scaler.GradScaler"),
        ("torch.compile", "function", "generated/torch.compile.html#torch.compile"),
        ("torch.distributed.all_gather", "function", "distributed.html#torch.distributed.all_gather"),
        ("torch.distributed.ProcessGroup", "class", "distributed.html#torch.distributed.ProcessGroup",
         "torch._C._distributed_c10d.ProcessGroup"),
        ("torch.nn.parallel.DistributedDataParallel", "class",
         "generated/torch.nn.parallel.DistributedDataParallel.html#torch.nn.parallel.DistributedDataParallel"),
    ]),
    "torch_geometric": ("PyG", "2", [
        ("torch_geometric.data.Data", "class",
         "generated/torch_geometric.data.Data.html#torch_geometric.data.Data", "torch_geometric.data.data.Data"),
        ("torch_geometric.nn.pool.knn_graph", "function",
         "generated/torch_geometric.nn.pool.knn_graph.html#torch_geometric.nn.pool.knn_graph"),
    ]),
    "pygsp": ("PyGSP", "0.6", [
        ("pygsp.graphs.Graph", "class", "reference/graphs.html#pygsp.graphs.Graph", "pygsp.graphs.graph.Graph"),
    ]),
    "numpy": ("NumPy", "2", [
        ("numpy.ndarray", "class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
        ("numpy.random.Generator", "class", "reference/random/generator.html#numpy.random.Generator",
         "numpy.random._generator.Generator"),
        ("numpy.dtype", "class", "reference/generated/numpy.dtype.html#numpy.dtype"),
    ]),
    "scipy": ("SciPy", "1", [
        ("scipy.sparse.csr_matrix", "class",
         "reference/generated/scipy.sparse.csr_matrix.html#scipy.sparse.csr_matrix", "scipy.sparse._csr.csr_matrix"),
        ("scipy.sparse.coo_matrix", "class",
         "reference/generated/scipy.sparse.coo_matrix.html#scipy.sparse.coo_matrix", "scipy.sparse._coo.coo_matrix"),
        ("scipy.optimize.nnls", "function", "reference/generated/scipy.optimize.nnls.html#scipy.optimize.nnls"),
        ("scipy.stats.kendalltau", "function",
         "reference/generated/scipy.stats.kendalltau.html#scipy.stats.kendalltau"),
    ]),
    "matplotlib": ("Matplotlib", "3", [
        ("matplotlib.figure.Figure", "class", "api/_as_gen/matplotlib.figure.Figure.html#matplotlib.figure.Figure"),
        ("matplotlib.axes.Axes", "class", "api/_as_gen/matplotlib.axes.Axes.html#matplotlib.axes.Axes",
         "matplotlib.axes._axes.Axes"),
    ]),
    "lightning": ("Lightning", "2", [
        ("lightning.pytorch.LightningModule", "class",
         "api/lightning.pytorch.core.LightningModule.html#lightning.pytorch.core.LightningModule",
         "lightning.pytorch.core.module.LightningModule"),
        ("lightning.pytorch.Callback", "class",
         "api/lightning.pytorch.callbacks.Callback.html#lightning.pytorch.callbacks.Callback",
         "lightning.pytorch.callbacks.callback.Callback"),
        ("lightning.pytorch.Trainer", "class",
         "common/trainer.html#lightning.pytorch.trainer.trainer.Trainer", "lightning.pytorch.trainer.trainer.Trainer"),
    ]),
    "sklearn": ("scikit-learn", "1", [
        ("sklearn.datasets.load_digits", "function",
         "modules/generated/sklearn.datasets.load_digits.html#sklearn.datasets.load_digits"),
    ]),
}


def inventory(title: str, version: str, entries) -> bytes:
    lines = []
    for public, role, uri, *aliases in entries:
        domain_role = f"py:{role}"
        for name in (public, *aliases):
            lines.append(f"{name} {domain_role} 1 {uri} {public}")
            if role == "exception":  # napoleon's Raises sections refer to them as classes too
                lines.append(f"{name} py:class 1 {uri} {public}")
    header = (f"# Sphinx inventory version 2\n# Project: {title}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    return header + zlib.compress(("\n".join(lines) + "\n").encode())


def main() -> None:
    for name, (title, version, entries) in PROJECTS.items():
        (HERE / f"{name}.inv").write_bytes(inventory(title, version, entries))


if __name__ == "__main__":
    main()
