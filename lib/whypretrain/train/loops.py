"""The four training runs of one seed: pre-train, linear probe, fine-tune, from scratch.

Each loop is one short function that builds its model and hands it to ``fit``, the one epoch
loop (Adam, cross-entropy, a checkpoint and a metrics row per epoch). ``ensure_runs`` reuses
finished runs, resumes interrupted ones and trains what is missing; ``train_study`` does that
for every seed of a study.

Reproducibility: the model's initialisation comes from a seed derived from (seed, kind); the
order of the training images in epoch ``e`` from a generator seeded with (seed, e), the same for
fine-tuning and scratch training, so both see the same batches. Optimizer and RNG state are
saved with every checkpoint, so a resumed run ends bit-identical to an uninterrupted one (CPU).
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from whypretrain.train import data, models
from whypretrain import distributed
from whypretrain.train.runs import KINDS, Run, locked

EVAL_BATCH = 1024


def _checkpointed(run: Run, epoch: int) -> None:
    """Called after every saved epoch; a no-op (the tests replace it to simulate a crash)."""


# --- the four loops -----------------------------------------------------------------------------

def pretrain(run: Run, ds: data.Datasets, params: dict, progress: bool = True) -> Run:
    """Train the whole network on the source set; the final checkpoint is the pre-trained model."""
    _seed_everything(params, run)
    model = models.build({**params, "weights": ""}, ds.num_source_classes, ds.source_stats)
    fit(run, model, ds.source_train, ds.source_test, params, epochs=params["pretrain_epochs"],
        every_epoch=False, progress=progress)
    return run


def probe(run: Run, parent: Run, ds: data.Datasets, params: dict, progress: bool = True) -> Run:
    """Linear probe: the pre-trained backbone, frozen, under a new linear head for the target."""
    _seed_everything(params, run)
    model = _from_pretrained(parent, params, ds)
    epochs = params["probe_epochs"] or params["epochs"]
    fit(run, model, ds.target_train, ds.target_test, params, epochs=epochs, every_epoch=False,
        freeze_backbone=True, progress=progress)
    return run


def finetune(run: Run, parent: Run, ds: data.Datasets, params: dict,
             progress: bool = True) -> Run:
    """Fine-tune all weights, starting from the pre-trained backbone and a new head."""
    _seed_everything(params, run)
    model = _from_pretrained(parent, params, ds)
    fit(run, model, ds.target_train, ds.target_test, params, epochs=params["epochs"],
        every_epoch=True, progress=progress)
    return run


def scratch(run: Run, ds: data.Datasets, params: dict, progress: bool = True) -> Run:
    """The same architecture from random initialisation, same data and schedule as fine-tuning."""
    _seed_everything(params, run)
    model = models.build({**params, "weights": ""}, ds.num_target_classes, ds.target_stats)
    fit(run, model, ds.target_train, ds.target_test, params, epochs=params["epochs"],
        every_epoch=True, progress=progress)
    return run


def _from_pretrained(parent: Run, params: dict, ds: data.Datasets) -> models.Classifier:
    model = models.build({**params, "weights": ""}, ds.num_target_classes, ds.target_stats)
    weights = models.weights_file(parent.params)
    if weights is not None:
        models.load_backbone_weights(model, weights)
    else:
        state = parent.load_state()
        model.backbone.load_state_dict(
            {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    return model


# --- the epoch loop -----------------------------------------------------------------------------

def fit(run: Run, model: torch.nn.Module, train_set: Dataset, test_set: Dataset, params: dict,
        *, epochs: int, every_epoch: bool, freeze_backbone: bool = False,
        progress: bool = True) -> None:
    """Train ``model`` for ``epochs`` epochs, writing a checkpoint and a metrics row after each
    (epoch 0 = before training). Resumes from the run's last complete epoch when it has one."""
    with num_threads(params.get("threads", 0)):
        _fit(run, model, train_set, test_set, params, epochs, every_epoch, freeze_backbone,
             progress, device_of(params))


@contextmanager
def num_threads(count: int):
    """Run the block with ``count`` torch CPU threads (0: leave as is), then restore them.
    CPU results are bit-identical only for one thread count, so it is a parameter."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(run, model, train_set, test_set, params, epochs, every_epoch, freeze_backbone,
         progress, device) -> None:
    model.to(device)
    if freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=params["lr"])
    seed = run.params["seed"]
    batch = models.inference_batch(params["arch"], EVAL_BATCH) if device == "cpu" else EVAL_BATCH

    resume = run.load_resume()
    # the wall time of the run: this session's, plus the earlier sessions' of a resumed run
    began = time.perf_counter()
    before = float(resume.get("seconds", 0.0)) if resume is not None else 0.0

    def seconds() -> float:
        return before + time.perf_counter() - began

    if resume is not None:
        start, rows = resume["epoch"], list(resume["rows"])
        model.load_state_dict(run.load_state(start))
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"])
    else:
        start, rows = 0, [_row(0, *evaluate(model, train_set, device, batch),
                               *evaluate(model, test_set, device, batch))]
        _save(run, model, optimizer, rows, 0, every_epoch, seconds())

    bar = tqdm(range(start + 1, epochs + 1), desc=f"seed {seed} {run.kind}", unit="epoch",
               disable=not progress, initial=start, total=epochs, leave=False)
    for epoch in bar:
        model.train()
        if freeze_backbone:
            model.backbone.eval()  # batch-norm statistics of a frozen backbone stay as they are
        order = torch.randperm(len(train_set), generator=_generator(seed, epoch))
        loss_sum, correct = 0.0, 0
        for x, y in _batches(train_set, order, params["batch_size"], device):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        rows.append(_row(epoch, loss_sum / len(train_set), correct / len(train_set),
                         *evaluate(model, test_set, device, batch)))
        _save(run, model, optimizer, rows, epoch, every_epoch, seconds())
        bar.set_postfix(test_acc=f"{rows[-1]['test_acc']:.3f}")
        _checkpointed(run, epoch)
    run.mark_done(seconds())


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, device: str,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` (eval mode)."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in _batches(dataset, torch.arange(len(dataset)), batch_size, device):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / len(dataset), correct / len(dataset)


def _batches(dataset: Dataset, order: torch.Tensor, batch_size: int, device: str):
    if isinstance(dataset, data.TensorImages):  # in memory: index the tensors directly
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield dataset.images[idx].to(device), dataset.labels[idx].to(device)
        return
    workers = 0 if device == "cpu" else min(8, torch.get_num_threads())
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                        num_workers=workers, pin_memory=device != "cpu")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _row(epoch, train_loss, train_acc, test_loss, test_acc) -> dict:
    return dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc,
                test_loss=test_loss, test_acc=test_acc)


def _save(run, model, optimizer, rows, epoch, every_epoch, seconds) -> None:
    resume = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "rows": rows,
              "seconds": seconds}
    run.save_checkpoint(epoch, model, resume, keep_previous=every_epoch)
    run.write_metrics(rows)


def device_of(params: dict) -> str:
    """The device of this process: ``params["device"]`` (``auto``: CUDA when there is one);
    under torchrun, ``cuda`` is this rank's GPU (``distributed.device``)."""
    if params.get("device", "auto") == "auto":
        return distributed.device("cuda" if torch.cuda.is_available() else "cpu")
    return distributed.device(params["device"])


def _seed_everything(params: dict, run: Run) -> None:
    torch.manual_seed(run.params["seed"] * len(KINDS) + KINDS.index(run.kind))
    if device_of(params).startswith("cuda"):
        torch.backends.cudnn.benchmark = False


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


# --- runs of a seed and of a study --------------------------------------------------------------

def _data_spec(params: dict, role: str) -> dict[str, Any]:
    """The parameters that decide the ``role`` (source/target) data, and no others."""
    name = params[role]
    spec: dict[str, Any] = {role: name, "image_size": params["image_size"]}
    if name == "folder":
        spec[f"{role}_folder"] = str(Path(params[f"{role}_folder"]).resolve())
    if name == "cifar10":
        spec["data_root"] = str(Path(params["data_root"]).resolve())
    if role == "target":
        spec["target_per_class"] = params["target_per_class"]
    return spec


def run_specs(params: dict, seed: int, ds: data.Datasets) -> dict[str, dict[str, Any]]:
    """The hashed specification of each of the four runs of ``seed``."""
    common = dict(seed=seed, arch=params["arch"], batch_size=params["batch_size"],
                  lr=params["lr"], threads=params.get("threads", 0))
    if params["arch"] == "efficientnet_lite0":  # only here, so other archs' hashes stay
        common["resolution"] = params["resolution"]
    weights = models.weights_file(params)  # a missing package or arch mismatch stops here
    if weights is not None:
        models.read_state(weights)  # a missing or corrupt file stops here, before any write
        pre = dict(kind="pretrain", seed=seed, arch=params["arch"],
                   weights_sha256=_sha256(weights), num_classes=ds.num_target_classes,
                   image_size=params["image_size"])
        if params["weights"]:
            pre["weights"] = str(weights.resolve())
        else:  # the packaged file: named by the source, not by where this venv put it
            pre["source"] = params["source"]
    else:
        pre = dict(kind="pretrain", **common, **_data_spec(params, "source"),
                   epochs=params["pretrain_epochs"], num_classes=ds.num_source_classes)
    from whypretrain.train.runs import run_hash
    target = dict(**common, **_data_spec(params, "target"), num_classes=ds.num_target_classes)
    return {
        "pretrain": pre,
        "probe": dict(kind="probe", **target, epochs=params["probe_epochs"] or params["epochs"],
                      parent=run_hash(pre)),
        "finetune": dict(kind="finetune", **target, epochs=params["epochs"], parent=run_hash(pre)),
        "scratch": dict(kind="scratch", **target, epochs=params["epochs"], parent=None),
    }


def ensure_runs(params: dict, seed: int, progress: bool = True,
                datasets: data.Datasets | None = None) -> dict[str, Run]:
    """The four finished runs of ``seed``: reused when on disk, resumed when interrupted,
    trained when missing."""
    return _ensure(params, [seed], progress, datasets)[seed]


def train_study(params: dict, progress: bool = True, datasets: data.Datasets | None = None
                ) -> dict[int, dict[str, Run]]:
    """``ensure_runs`` for every seed in ``params["seeds"]``."""
    return _ensure(params, list(params["seeds"]), progress, datasets, seeds_bar=True)


# Under torchrun the runs are spread over ranks in two phases (a run is trained by one rank,
# start to end: no data-parallel training inside a run); the second phase starts from the
# first one's pre-trained models.
PHASES = (("pretrain", "scratch"), ("probe", "finetune"))


def _ensure(params: dict, seeds: list[int], progress: bool,
            datasets: data.Datasets | None = None, seeds_bar: bool = False
            ) -> dict[int, dict[str, Run]]:
    ds = datasets or data.load_datasets(params)
    if params["weights"]:  # a file of another network stops here, before anything is written
        models.build(params, ds.num_target_classes)

    def create() -> dict[int, dict[str, Run]]:
        return {seed: {kind: Run.create(params["workdir"], spec)
                       for kind, spec in run_specs(params, seed, ds).items()} for seed in seeds}

    # rank 0 makes the run folders, the others open them (two nodes writing one new file
    # would clash on its temporary name)
    runs = create() if distributed.is_main() else {}
    distributed.barrier()
    runs = runs or create()
    if distributed.world() == 1:
        for seed in tqdm(seeds, desc="seeds", unit="seed", disable=not (progress and seeds_bar)):
            for kind in KINDS:
                _train(runs[seed], kind, ds, params, progress)
        return runs
    progress = progress and distributed.is_main()
    for phase in PHASES:
        # rank 0 lists what is missing, so that every rank shares the same list out
        todo = distributed.agree([(seed, kind) for seed in seeds for kind in phase
                                  if not runs[seed][kind].done])
        for i in range(distributed.rank(), len(todo), distributed.world()):
            seed, kind = todo[i]
            _train(runs[seed], kind, ds, params, progress)
        distributed.barrier()
    missing = [run for seed in seeds for run in runs[seed].values() if not run.done]
    if missing:
        raise RuntimeError(f"runs not finished after training: {missing}")
    return runs


def _train(runs: dict[str, Run], kind: str, ds: data.Datasets, params: dict,
           progress: bool) -> None:
    """Train the ``kind`` run of one seed unless it is done (its parent must be done). Under
    torchrun each rank locks the runs it trains (no two ranks train the same run)."""
    run = runs[kind]
    if run.done:
        return
    with locked(run.path):  # another process on this workdir may be training it
        if run.done:
            return
        if not run.intact():  # a damaged file: trained again from its start (same numbers)
            run.reset()
        if kind == "pretrain":
            if models.weights_file(run.params) is not None:
                run.mark_done()  # the weights file is the pre-trained model
            else:
                pretrain(run, ds, params, progress)
        elif kind == "probe":
            probe(run, runs["pretrain"], ds, params, progress)
        elif kind == "finetune":
            finetune(run, runs["pretrain"], ds, params, progress)
        else:
            scratch(run, ds, params, progress)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
