"""One training epoch and one evaluation pass, shared by the classification stages."""
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.distributed import Runtime, all_gather_cat, all_reduce_sum, autocast, grad_scaler
from common.errors import batch_loop
from common.metrics import confusion_matrix


def logits_of(out):
    """Our models may return (logits, features); torchvision's return logits."""
    return out[0] if isinstance(out, (tuple, list)) else out


def to_device(x, rt: Runtime, channels_last: bool):
    x = x.to(rt.device, non_blocking=True)
    if channels_last and rt.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@batch_loop("training")
def train_one_epoch(model, loader, optimizer, rt: Runtime, amp: bool = False, channels_last: bool = False,
                    desc: str = "train", loss_fn=None, scaler=None) -> dict:
    """loss_fn(model, x, y) -> (loss, logits) overrides plain cross-entropy (e.g. for distillation).
    scaler: the fp16 loss scaler kept across epochs (default: a new one, active only under fp16 autocast)."""
    model.train()
    scaler = scaler if scaler is not None else grad_scaler(rt, amp)
    total = torch.zeros(3, device=rt.device, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(loader, desc=desc, leave=False, disable=not rt.is_main, dynamic_ncols=True)
    for x, y in bar:
        x, y = to_device(x, rt, channels_last), y.to(rt.device, non_blocking=True)
        with autocast(rt, amp):
            if loss_fn is None:
                logits = logits_of(model(x))
                loss = F.cross_entropy(logits, y)
            else:
                loss, logits = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                              torch.tensor(len(y), device=rt.device, dtype=torch.float64)])
    total = all_reduce_sum(total, rt)
    return {"loss": (total[0] / total[2]).item(), "acc": (total[1] / total[2]).item()}


@batch_loop("evaluation")
@torch.no_grad()
def predict(model, loader, rt: Runtime, amp: bool = False, channels_last: bool = False, desc: str = "eval"):
    """(y_true, y_pred) numpy arrays over the whole (possibly sharded) loader."""
    model.eval()
    ys, ps = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not rt.is_main, dynamic_ncols=True):
        with autocast(rt, amp):
            p = logits_of(model(to_device(x, rt, channels_last))).argmax(1)
        ys.append(y.to(rt.device))
        ps.append(p)
    y = all_gather_cat(torch.cat(ys), rt)
    p = all_gather_cat(torch.cat(ps), rt)
    return y.cpu().numpy(), p.cpu().numpy()


def evaluate(model, loader, rt: Runtime, num_classes: int, **kw) -> np.ndarray:
    y, p = predict(model, loader, rt, **kw)
    return confusion_matrix(y, p, num_classes)
