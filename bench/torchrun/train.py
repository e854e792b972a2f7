"""tg-train's workload as a torchrun user would write it, for the
side-by-side benchmark (bench/torchrun/README.md).

The same model as trainer/model (byte-level: embedding + learned
positions, N residual MLP blocks with a 4D hidden layer and tanh GELU, a
final layernorm and a 256-way softmax; the same parameter count), the same
data (tg-train's generated corpus and its sample order, a function of the
global sample index alone), the same global batch cut into the same
chunks of M samples (a world of W ranks splits them as tg_shard_range does,
so the global batch stays fixed when the world shrinks: gradient
accumulation), and AdamW with tg-train's hyperparameters and schedule.
One thread per worker, like tg-train.

What differs is what torchrun users do: DistributedDataParallel over gloo
with the whole AdamW state on every rank (tg-train shards it, ZeRO-1; at
34k parameters that costs nothing here), rank 0 saving a checkpoint to
disk every K steps (temporary file, then an atomic rename), and every
worker loading the newest one when torchrun (re)starts it. On a failure
torchrun restarts every worker, so that is the only resume path.

Every line it writes starts with the wall clock in unix milliseconds, so
the bench can tell from the log alone when a worker started, when its
process group was ready, where it resumed and when each step completed.
The lines go to one file (--log), appended by every worker: each line is a
single write shorter than PIPE_BUF, so lines never interleave.
"""

import argparse
import datetime
import math
import os
import sys
import time

STARTED_MS = int(time.time() * 1000)  # before torch is imported: its import is part of a restart

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

VOCAB = 256
MASK64 = (1 << 64) - 1
CORPUS_BYTES = 64 << 10  # TG_CORPUS_FALLBACK_BYTES


def now_ms():
    return int(time.time() * 1000)


class Log:
    def __init__(self, path, who):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.who = who

    def __call__(self, text, at_ms=None):
        line = "%d %s %s\n" % (now_ms() if at_ms is None else at_ms, self.who, text)
        os.write(self.fd, line.encode()[:4000])


# ---------------------------------------------------------------- data


def mix64(z):
    """splitmix64's finaliser, as trainer/model/corpus.c."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def generated_text(size=CORPUS_BYTES):
    """tg-train's default corpus: English-like words from a fixed list and seed."""
    words = ("the of and to a in that is for it as with be on not this by are or from at which "
             "you all may program work license free software source code copy rights terms "
             "conditions distribute modify network training model step failure node rank memory "
             "checkpoint gradient world recover").split()
    out = bytearray()
    state, in_sentence = 0x7461726469677261, 0
    while len(out) < size:
        state = mix64(state)
        w = words[state % len(words)]
        out += (w[0].upper() + w[1:] if in_sentence == 0 else w).encode()
        in_sentence += 1
        sep = ".\n" if in_sentence > 4 and (state >> 32) % 6 == 0 else " "
        if sep[0] == ".":
            in_sentence = 0
        out += sep.encode()
    return bytes(out[:size])


class Corpus:
    def __init__(self, text, context, seed):
        self.bytes = torch.tensor(list(text), dtype=torch.long)
        self.context, self.seed = context, seed
        self.starts = len(text) - context

    def batch(self, first, count):
        """Samples first..first+count-1: (tokens, targets), each count x T."""
        T = self.context
        offsets = [mix64(self.seed ^ mix64(first + s)) % self.starts for s in range(count)]
        rows = torch.stack([self.bytes[o:o + T + 1] for o in offsets])
        return rows[:, :T], rows[:, 1:]


def shard_range(count, world, rank):
    """tg_shard_range: the first count % world ranks take one more."""
    base, extra = divmod(count, world)
    begin = rank * base + min(rank, extra)
    return begin, begin + base + (1 if rank < extra else 0)


# ---------------------------------------------------------------- model


class Block(torch.nn.Module):
    def __init__(self, D, H):
        super().__init__()
        self.ln = torch.nn.LayerNorm(D, eps=1e-5)
        self.w1 = torch.nn.Linear(D, H)
        self.w2 = torch.nn.Linear(H, D)

    def forward(self, x):
        return x + self.w2(F.gelu(self.w1(self.ln(x)), approximate="tanh"))


class ByteLM(torch.nn.Module):
    """trainer/model/model.h: P = 512 D + 256 + T D + N (8 D^2 + 7 D) + 2 D."""

    def __init__(self, width, depth, context):
        super().__init__()
        D, H = width, 4 * width
        self.wte = torch.nn.Embedding(VOCAB, D)
        self.wpe = torch.nn.Parameter(torch.zeros(context, D))
        self.blocks = torch.nn.ModuleList(Block(D, H) for _ in range(depth))
        self.lnf = torch.nn.LayerNorm(D, eps=1e-5)
        self.out = torch.nn.Linear(D, VOCAB)
        a = 0.02 * math.sqrt(3)  # uniform with std 0.02, W2 scaled by 1/sqrt(2N)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    scale = 1 / math.sqrt(2 * max(depth, 1)) if name.endswith("w2.weight") else 1
                    p.uniform_(-a * scale, a * scale)
                elif "ln" in name and name.endswith("weight"):
                    p.fill_(1)
                else:
                    p.zero_()

    def forward(self, tokens, targets):
        x = self.wte(tokens) + self.wpe[: tokens.shape[1]]
        for b in self.blocks:
            x = b(x)
        logits = self.out(self.lnf(x))
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def lr_at(step, a):
    """tg_adamw_lr: linear warmup, then cosine to lr_min at --steps."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    if step >= a.steps:
        return a.lr_min
    progress = (step - a.warmup) / (a.steps - a.warmup)
    return a.lr_min + (a.lr - a.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- checkpoints


def load_checkpoint(path, model, opt):
    """The step to resume at: that of the newest checkpoint, or 0."""
    if not os.path.exists(path):
        return 0
    state = torch.load(path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return state["step"]


def save_checkpoint(path, model, opt, step):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)  # a crash mid-save leaves the previous checkpoint whole


# ---------------------------------------------------------------- training


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50, help="optimizer steps to train")
    p.add_argument("--width", type=int, default=32, help="residual width D")
    p.add_argument("--depth", type=int, default=2, help="residual MLP blocks N")
    p.add_argument("--context", type=int, default=16, help="bytes per sample T")
    p.add_argument("--batch", type=int, default=24, help="global batch B, fixed whatever the world size")
    p.add_argument("--micro", type=int, default=4, help="samples per chunk M (divides B)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--lr-min", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--ckpt", required=True, help="checkpoint file (shared by every node)")
    p.add_argument("--ckpt-every", type=int, default=20, help="rank 0 saves every K steps")
    p.add_argument("--timeout-s", type=float, default=1800,
                   help="init_process_group timeout: how long a collective waits (default: PyTorch's 30 min)")
    p.add_argument("--log", required=True, help="the file every worker appends its lines to")
    a = p.parse_args(argv)
    if a.batch % a.micro:
        p.error("--micro must divide --batch")
    return a


def main(argv):
    a = parse_args(argv)
    torch.set_num_threads(1)  # tg-train computes on one thread per rank
    torch.set_num_interop_threads(1)
    node = os.environ.get("BENCH_NODE", "?")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    log = Log(a.log, "%s/%d pid %d" % (node, local, os.getpid()))
    log("started (restart %s)" % os.environ.get("TORCHELASTIC_RESTART_COUNT", "?"), STARTED_MS)
    log("imported torch")

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=a.timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(a.seed)
    model = ByteLM(a.width, a.depth, a.context)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    step = load_checkpoint(a.ckpt, model, opt)
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    corpus = Corpus(generated_text(), a.context, a.seed)
    log("rank %d of %d: %s at step %d (%d parameters)" % (rank, world, "resuming" if step else "starting", step,
                                                          n_params))

    chunks = a.batch // a.micro
    cb, ce = shard_range(chunks, world, rank)
    while step < a.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        opt.zero_grad(set_to_none=False)
        # Each chunk's mean loss scaled so that DDP's average over the
        # world is the mean over the step's chunks; a rank with no chunk
        # (more ranks than chunks) still joins the all-reduce, with zeros.
        scale = world / chunks
        mine = list(range(cb, ce)) or [None]
        loss_sum = torch.zeros(1)
        for i, c in enumerate(mine):
            tokens, targets = corpus.batch(step * a.batch + (c or 0) * a.micro, a.micro)
            last = i == len(mine) - 1
            with ddp.no_sync() if not last else torch.enable_grad():
                loss = ddp(tokens, targets)
                (loss * (scale if c is not None else 0.0)).backward()
            if c is not None:
                loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dist.all_reduce(loss_sum)
        step += 1
        if rank == 0 and step % a.ckpt_every == 0:
            save_checkpoint(a.ckpt, model, opt, step)
        if rank == 0:
            log("step %d loss %.4f" % (step, loss_sum.item() / chunks))
    log("rank %d done after %d steps" % (rank, step))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
