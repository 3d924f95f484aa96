"""Everything distributed in one place: process-group helpers, a differentiable all-gather, the
:class:`GlobalBatch` wrapper that makes any loss see the global batch, and a launcher for tests.

Process-group helpers (:func:`get_rank`, :func:`get_world_size`, :func:`init_from_env`, :func:`barrier`,
:func:`broadcast_object`, :func:`all_reduce_sum`, :func:`shard`): trivial on one process (rank 0 of 1).
Under ``torchrun`` (or ``geomlat study NAME --nproc N``, or :func:`launch`) with an initialized
``torch.distributed`` process group every rank computes and rank 0 alone writes files (config, metrics,
checkpoints, tables, figures). One rule for it: the writers of :mod:`geomlat.io` skip the write on the
other ranks inside :func:`main_process_writes` (the study runner and :func:`geomlat.engine.train` run in
it), and what decides from shared files (skip or resume a run, evaluate and record it) runs on rank 0
through :func:`on_main_process`, which gives its result, or its error, to every rank. Files are shared
through the file system: with several nodes, the output folder must be on a file system every node sees.
An error on one rank stops every rank within seconds inside :func:`ranks_fail_together` (the CLI runs a
study in it), instead of leaving the others waiting at a collective until the process group's timeout.

A latent geometry graph couples every pair of samples of a batch. Under data parallelism each process
(rank) holds only its shard of the batch; :class:`GlobalBatch` (``global_batch(loss)``) gathers the
batch-shaped inputs of any loss from every rank with :func:`all_gather_with_grad` before calling it, so
that the loss *is* the loss of one process on the concatenated batch (rank order: rank 0's rows first).

Gradient convention (default ``grad_reduce="sum"``, made for DistributedDataParallel)
-------------------------------------------------------------------------------------
Every rank computes the same global loss ``L`` (same gathered tensor, same operations). The backward of
the gather all-reduces (sums) the incoming gradient over ranks and returns this rank's rows, so rank r
receives ``sum_q dL_q/dx_r = W * dL/dx_r`` (``W`` = world size): the gradient of the *sum* of the
per-rank losses. DDP then averages the parameter gradients over the ranks (divides by ``W``), so after
``backward()`` the parameter gradients equal the single-process gradient of ``L`` on the concatenated
batch. This is the same bookkeeping as for any per-rank mean loss under DDP (cross-entropy averaged over
a rank's shard: the per-rank input gradient is ``W`` times the single-process one, DDP's average fixes
the parameters), so ``task CE (local) + lambda * GKD (global)`` trains exactly like one process on the
whole batch (equal shards). In short:

- loss value on every rank = single-process value on the concatenated batch;
- ``param.grad`` after DDP's averaging = single-process value;
- ``x.grad`` of an input shard = ``W`` x single-process value (the gradient of ``sum_q L_q``).

``grad_reduce="mean"`` divides the summed gradient by ``W``: then ``x.grad`` equals the single-process
input gradient (use it without DDP, or when parameter gradients are *summed* over ranks).

The training engine (:func:`geomlat.engine.train` under torchrun) gives each rank a contiguous shard of
the one-process batch in rank order and weights each rank's loss by ``W * b_r / B``, so that a global
graph loss there trains exactly as on one process (tests/engine/test_distributed_engine.py).

Every rank must call the same gathers in the same order, forward and backward (they are collectives).
Without an initialized process group (or with one process) the gathers return their input unchanged,
so a wrapped loss on one process is the loss itself.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from ._params import check_int


__all__ = [
    "GRAD_REDUCES",
    "GlobalBatch",
    "all_gather_with_grad",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "find_free_port",
    "gather_batch",
    "gather_shapes",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "global_batch",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "launch",
    "main_process_writes",
    "on_main_process",
    "ranks_fail_together",
    "shard",
    "writes_skipped",
]

GRAD_REDUCES = ("sum", "mean")

#: Largest tensor rank :func:`all_gather_with_grad` checks across processes (shape exchanged in one message).
_MAX_DIMS = 8
_DTYPES = (
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
)


def _world(group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def gather_shapes(x: Tensor, group=None) -> list[torch.Size]:
    """Shapes of ``x`` on every rank (one small all-gather), checked to differ only in dimension 0.

    Raises:
        ValueError: (on every rank alike, so no rank is left waiting) the ranks disagree on the number of
            dimensions, on a non-batch dimension or on the dtype, or ``x`` has more than 8 dimensions.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError(f"gathering needs a tensor with a batch dimension (B, ...), got shape {tuple(x.shape)}")
    if x.dim() > _MAX_DIMS:
        raise ValueError(f"gathering supports tensors of at most {_MAX_DIMS} dimensions, got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"cannot gather dtype {x.dtype}")
    if _world(group) == 1:
        return [x.shape]
    # one fixed-length message per rank: [ndim, dtype index, shape padded with 0]
    meta = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64, device=x.device)
    meta[0], meta[1] = x.dim(), _DTYPES.index(x.dtype)
    meta[2 : 2 + x.dim()] = torch.tensor(x.shape, dtype=torch.int64)
    metas = [torch.empty_like(meta) for _ in range(_world(group))]
    dist.all_gather(metas, meta, group=group)
    rows = [m.tolist() for m in metas]
    shapes = [torch.Size(r[2 : 2 + r[0]]) for r in rows]
    if any(r[0] != rows[0][0] or r[1] != rows[0][1] or s[1:] != shapes[0][1:] for r, s in zip(rows, shapes)):
        described = ", ".join(f"rank {i}: {tuple(s)} {_DTYPES[r[1]]}" for i, (r, s) in enumerate(zip(rows, shapes)))
        raise ValueError(f"cannot gather tensors that differ beyond the batch dimension or in dtype across ranks ({described})")
    return shapes


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's (B_r, ...) tensor along dim 0; backward: all-reduce, take own rows."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], grad_reduce: str, group) -> Tensor:
        world = len(sizes)
        rank = dist.get_rank(group)
        ctx.group, ctx.grad_reduce, ctx.world = group, grad_reduce, world
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        biggest = max(sizes)
        x = x.contiguous()
        if x.shape[0] < biggest:  # all_gather needs equal shapes: pad, then trim
            x = torch.cat([x, x.new_zeros((biggest - x.shape[0],) + tuple(x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x, group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        # every rank's loss may depend on this rank's rows: d(sum_q L_q)/dx_r = sum_q (dL_q/dX)[rows of r]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        if ctx.grad_reduce == "mean":
            grad = grad / ctx.world
        return grad[ctx.start : ctx.stop], None, None, None


def all_gather_with_grad(x: Tensor, *, grad_reduce: str = "sum", group=None) -> Tensor:
    """Differentiable all-gather: (B_r, ...) on each rank -> (sum_r B_r, ...) on every rank, rank order.

    Shards may have different batch sizes B_r (the last batch of an epoch); every other dimension and the
    dtype must agree (checked, :func:`gather_shapes`). Integer tensors (labels) are gathered too.

    Backward (see the module docstring for the convention): the gradient w.r.t. the output is summed over
    ranks (``grad_reduce="sum"``, the DDP convention) or averaged (``"mean"``), and this rank's rows are
    returned. Without a process group (or world size 1) returns ``x`` itself.
    """
    if grad_reduce not in GRAD_REDUCES:
        raise ValueError(f"unknown grad_reduce {grad_reduce!r}; expected one of {list(GRAD_REDUCES)}")
    shapes = gather_shapes(x, group)
    if len(shapes) == 1:
        return x
    return _AllGather.apply(x, [s[0] for s in shapes], grad_reduce, group)


def gather_batch(x: Tensor, y: Tensor | None = None, *, grad_reduce: str = "sum", group=None) -> tuple[Tensor, Tensor | None]:
    """Gather a batch shard ``x`` (B_r, ...) with gradients and its labels ``y`` (B_r,) (no gradient).

    Returns ``(x_all (B, ...), y_all (B,) or None)``, ``B = sum_r B_r``, rows in rank order, identical on
    every rank.
    """
    x_all = all_gather_with_grad(x, grad_reduce=grad_reduce, group=group)
    if y is None:
        return x_all, None
    if not isinstance(y, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match the batch of shape {tuple(x.shape)}")
    return x_all, all_gather_with_grad(y.detach(), group=group)


# ----------------------------------------------------------------------------------------------------
# process group: rank, world size, collectives of the engine, writes on rank 0 only
# ----------------------------------------------------------------------------------------------------

def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Rank of this process (0 without an initialized process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """Number of processes (1 without an initialized process group)."""
    return dist.get_world_size() if _active() else 1


def get_local_rank() -> int:
    """Rank of this process on its node (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes files (rank 0)."""
    return get_rank() == 0


def is_distributed() -> bool:
    """True when an initialized process group has more than one process."""
    return get_world_size() > 1


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` when CUDA is available (CPU tensors through gloo, GPU tensors through
    NCCL), else ``"gloo"``; ``GEOMLAT_DIST_BACKEND`` overrides."""
    env = os.environ.get("GEOMLAT_DIST_BACKEND")
    if env:
        return env
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) when ``WORLD_SIZE > 1``.

    With CUDA, rank ``LOCAL_RANK`` uses GPU ``LOCAL_RANK`` (``torch.cuda.set_device``), so that ``"cuda"``
    and ``"auto"`` devices mean this process's GPU. Returns True if a process group was initialized here
    (False: single process, or already initialized).
    """
    if _active():
        return False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: start the processes with torchrun "
                           "(or `geomlat study NAME --nproc N`)")
    if torch.cuda.is_available():
        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend or default_backend(), init_method="env://", timeout=timedelta(seconds=timeout_s))
    return True


def barrier() -> None:
    """Wait for every process (no-op on one process).

    Through gloo with a CPU tensor whenever gloo is available: ``dist.barrier()`` would go through NCCL on
    a machine with GPUs, also for a CPU-only run whose processes share a GPU (which NCCL refuses)."""
    if not is_distributed():
        return
    if "gloo" in str(dist.get_backend()):
        dist.all_reduce(torch.zeros(1))
    else:
        dist.barrier()


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled: use for small Python values only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over the processes (a new tensor; the input is left untouched)."""
    out = tensor.clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def shard(batch: Tensor, rank: int | None = None, world: int | None = None) -> Tensor:
    """This rank's contiguous part of a batch (of indices or samples) along dim 0, in rank order.

    ``torch.tensor_split``: sizes differ by at most one, rank 0's rows first, so that gathering the shards
    in rank order (:func:`all_gather_with_grad`) gives back the batch itself.
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    return batch.tensor_split(world)[rank]


_SKIP_WRITES = False


@contextlib.contextmanager
def main_process_writes() -> Iterator[None]:
    """Within this block, the atomic writers of :mod:`geomlat.io` write on rank 0 only (the other
    ranks skip the write and return the path). The study runner wraps every study in it, so that code
    written for one process (tables, figures, caches) writes each file once under torchrun."""
    global _SKIP_WRITES
    before = _SKIP_WRITES
    _SKIP_WRITES = not is_main_process()
    try:
        yield
    finally:
        _SKIP_WRITES = before


def writes_skipped() -> bool:
    """True inside :func:`main_process_writes` on a rank other than 0."""
    return _SKIP_WRITES


def on_main_process(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result given to every rank (pickled: keep it small); an exception there
    is raised on every rank (the original on rank 0, a RuntimeError naming it elsewhere). One process: ``fn()``.

    The rule of rank-0 work: what reads or changes shared state (a run folder's files: decide skip or resume,
    evaluate and record) runs here; file writes go through :mod:`geomlat.io` inside :func:`main_process_writes`.
    Collective: every rank must call it."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if is_main_process():
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks were told
            error = err
    result, message = broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


_FAILED_KEY = "geomlat/failed/"
_blocks = itertools.count()  # every rank enters the same blocks in the same order: one key per block


@contextlib.contextmanager
def ranks_fail_together(poll_s: float = 0.5, grace_s: float = 2.0) -> Iterator[None]:
    """Within this block an exception on one rank stops every rank within seconds, with its message.

    Without it a rank that raises leaves the others waiting at their next collective (a barrier, a broadcast)
    until the process group's timeout (30 minutes), unless a launcher stops them: the failed rank may not
    exit at once, and NCCL does not notice a dead peer. Here the failing rank leaves its error in the process
    group's store before raising, and a watcher thread of every rank polls the store every ``poll_s`` seconds:
    a rank that finds a peer's error (or finds the store gone with its host) prints it on stderr and ends its
    process with exit status 1, also while it waits inside a collective. A rank failing itself within
    ``grace_s`` seconds reports its own error instead (all ranks failing alike, e.g. on a bad input file).
    Leaving the block normally stops the watcher. One process: nothing is done.

    The study CLI runs every study in it (``geomlat study`` under torchrun or ``--nproc``)."""
    if not is_distributed():
        yield
        return
    store = dist.distributed_c10d._get_default_store()  # the store every rank of the default group shares
    key = f"{_FAILED_KEY}{next(_blocks)}"
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_for_failures, args=(store, key, stop, poll_s, grace_s), daemon=True,
                               name="geomlat-ranks-fail-together")
    watcher.start()
    try:
        yield
    except BaseException as err:
        stop.set()
        try:
            store.set(key, f"rank {get_rank()} failed: {type(err).__name__}: {_first_line(err)}")
        except Exception:  # noqa: BLE001 - the store is gone with its host process: the peers notice that
            pass
        raise
    finally:
        stop.set()
        watcher.join()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _watch_for_failures(store, key: str, stop: threading.Event, poll_s: float, grace_s: float) -> None:
    """The watcher of :func:`ranks_fail_together`: end this process when a peer left its error under ``key``."""
    while not stop.wait(poll_s):
        try:
            if not store.check([key]):
                continue
            message = store.get(key).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the store's host (rank 0, or torchrun's agent) is gone
            message = "the process group's store is unreachable: the rank or launcher holding it has ended"
        if stop.wait(grace_s):  # this rank raised (it reports its own error) or finished meanwhile
            return
        print(f"geomlat: rank {get_rank()} stops: {message}", file=sys.stderr, flush=True)
        os._exit(1)  # a rank blocked in a collective cannot be interrupted otherwise


# ----------------------------------------------------------------------------------------------------
# any loss over the global batch
# ----------------------------------------------------------------------------------------------------

def _gather_arg(value: Any, grad_reduce: str, group) -> Any:
    """A tensor with a batch dimension gathered over ranks (integer and boolean tensors, i.e. labels,
    without gradient); a list or tuple of them element-wise; anything else (None, numbers) unchanged."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value
        if value.is_floating_point() or value.is_complex():
            return all_gather_with_grad(value, grad_reduce=grad_reduce, group=group)
        return all_gather_with_grad(value.detach(), group=group)
    if isinstance(value, (list, tuple)):
        return type(value)(_gather_arg(v, grad_reduce, group) for v in value)
    return value


class GlobalBatch(nn.Module):
    """Wrap a loss so that it sees the batch of every rank: ``GlobalBatch(loss)(*args) = loss(*gathered)``.

    Before calling ``loss``, every tensor argument with a batch dimension (B_r, ...), also inside a list
    or tuple (the per-layer features of the distillation losses), is gathered from all ranks with
    :func:`all_gather_with_grad` (rank order, shards of different sizes allowed); integer and boolean
    tensors (labels) are gathered without gradient; 0-d tensors and other arguments pass unchanged. The
    value on every rank is then the value of one process on the concatenated batch, and the gradients
    follow the convention of the module docstring (``param.grad`` after DDP's average, and the gradient of
    the loss's own parameters such as FitNet's projections, equal the one-process values; an input
    shard's gradient is ``W`` times the one-process one with ``grad_reduce="sum"``, exactly it with
    ``"mean"``). Every batch-size-dependent setting of the loss (``k``, an RBF bandwidth estimated from the
    batch, a mean reduction) then refers to the global batch.

    Works for any loss of :mod:`geomlat.losses` and any user loss whose batch-shaped arguments have the
    samples along dim 0 (the protocol of :func:`geomlat.losses.register_loss`). Without an initialized
    process group (or with one process) the wrapper is the loss itself. Collective: every rank must call
    it with the same structure of arguments.

    The wrapped loss is ``.loss`` (its parameters are the wrapper's, under the prefix ``loss.``); the
    wrapper forwards its ``consumes`` attribute, so a :class:`geomlat.objectives.Distiller` routes it as the
    loss itself.

    Args:
        loss: any ``nn.Module`` (or a module built by :func:`geomlat.losses.build_loss`).
        grad_reduce: ``"sum"`` (default, for DDP) or ``"mean"``, see :func:`all_gather_with_grad`.
        group: process group (default: the world).
    """

    def __init__(self, loss: nn.Module, grad_reduce: str = "sum", group=None):
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"GlobalBatch wraps an nn.Module loss, got {type(loss).__name__}")
        if isinstance(loss, GlobalBatch):
            raise ValueError("this loss already sees the global batch (GlobalBatch inside GlobalBatch)")
        if grad_reduce not in GRAD_REDUCES:
            raise ValueError(f"unknown grad_reduce {grad_reduce!r}; expected one of {list(GRAD_REDUCES)}")
        self.loss, self.grad_reduce, self.group = loss, grad_reduce, group

    @property
    def consumes(self) -> str | None:
        """What the wrapped loss consumes (``"features"`` or ``"logits"``; see :mod:`geomlat.losses`)."""
        return getattr(self.loss, "consumes", None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if _world(self.group) == 1:
            return self.loss(*args, **kwargs)
        args = tuple(_gather_arg(a, self.grad_reduce, self.group) for a in args)
        kwargs = {k: _gather_arg(v, self.grad_reduce, self.group) for k, v in kwargs.items()}
        return self.loss(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"grad_reduce={self.grad_reduce!r}"


def global_batch(loss: nn.Module, grad_reduce: str = "sum", group=None) -> GlobalBatch:
    """``GlobalBatch(loss, grad_reduce, group)``: ``loss`` computed over the batch of every rank."""
    return GlobalBatch(loss, grad_reduce=grad_reduce, group=group)

# ----------------------------------------------------------------------------------------------------
# launcher (tests, notebooks): fresh processes with an initialized process group on this host
# ----------------------------------------------------------------------------------------------------

def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _launch_worker(rank, fn, nprocs, backend, port, out_dir, args, timeout, threads):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs),
    )
    if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ and os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only, whatever the host name resolves to
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=nprocs, timeout=timedelta(seconds=timeout))
        try:
            result = fn(rank, nprocs, *args)
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except BaseException:
        # every rank's traceback is kept: the first process torch reports is often a peer of the culprit
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    path = Path(out_dir) / f"rank{rank}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(result, tmp)
    os.replace(tmp, path)


def launch(
    fn: Callable[..., Any],
    nprocs: int,
    backend: str = "gloo",
    args: Sequence[Any] = (),
    *,
    timeout: float = 300.0,
    threads: int = 1,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``nprocs`` fresh processes joined in one process group.

    Loopback rendezvous (``MASTER_ADDR=127.0.0.1``, a free port, ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    set as torchrun does; gloo bound to the loopback interface), ``torch.multiprocessing`` spawn. With
    ``backend="nccl"`` rank r uses GPU ``r``.

    Args:
        fn: a module-level (picklable) function. Its return value must be loadable with
            ``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists, tuples, dicts).
        nprocs: number of processes (>= 1).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU).
        args: extra picklable arguments.
        timeout: seconds for the whole run and for each collective; on expiry every process is stopped.
        threads: ``torch.set_num_threads`` in each process.

    Returns:
        the return values of ``fn``, indexed by rank.

    Raises:
        RuntimeError: ``fn`` raised on some rank (the message holds every failed rank's traceback).
        TimeoutError: the processes did not finish within ``timeout``.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    check_int(nprocs, "nprocs", low=1)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown backend {backend!r}; expected 'gloo' or 'nccl'")
    if backend == "nccl" and torch.cuda.device_count() < 1:
        raise RuntimeError("backend='nccl' needs CUDA GPUs; none is visible (use backend='gloo')")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with tempfile.TemporaryDirectory(prefix="geomlat-launch-") as out_dir:
        port = find_free_port()
        ctx = mp.start_processes(
            _launch_worker,
            args=(fn, nprocs, backend, port, out_dir, tuple(args), float(timeout), int(threads)),
            nprocs=nprocs,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=0.5):
                if time.monotonic() > deadline:
                    for proc in ctx.processes:
                        if proc.is_alive():
                            proc.terminate()
                    for proc in ctx.processes:
                        proc.join(5)
                    raise TimeoutError(f"launch: {nprocs} processes did not finish within {timeout} s")
        except ProcessException as err:
            errors = sorted(Path(out_dir).glob("rank*.err"))
            if not errors:
                raise
            report = "\n".join(f"--- {e.stem} ---\n{e.read_text()}" for e in errors)
            raise RuntimeError(f"launch: {len(errors)} of {nprocs} processes failed:\n{report}") from err
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(nprocs)]
