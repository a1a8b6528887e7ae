"""The one training loop, for every backend: plain torch, FSDP2 under torchrun, and Cerebras.

It is written in cerebras.pytorch's idiom, as gigaGPT's is: the step is a function traced once
(`backend.trace`), so it holds nothing data-dependent, and everything that reads values (logging,
checkpoints) happens in closures the backend runs once the step's results exist.
"""
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gigagpt import data, scaling
from gigagpt.backends import get_backend
from gigagpt.config import fit_model_config
from gigagpt.optim import lr_at


@torch.no_grad()
def estimate_loss(model, backend, tokens):
    model.eval()
    losses = []
    for x, y in backend.eval_batches(tokens):
        with backend.autocast():
            losses.append(model(x, y))
    model.train()
    return backend.reduce_mean(torch.stack(losses).mean()) if losses else None


def make_training_step(backend, model, optimizer, scheduler):
    """The step every backend runs: forward and backward per micro-batch, clip, AdamW, schedule.

    `gigagpt bench` times this same function, so its numbers are those of `train`.
    """
    # A list, not a generator: a traced step must clip every parameter on every step (see gigaGPT issue).
    params = [p for group in optimizer.param_groups for p in group["params"]]

    @backend.trace
    def training_step(input_ids, labels):
        if input_ids.dim() == 2:  # Cerebras streams whole (B, T) batches; its compiler does any accumulation
            input_ids, labels = input_ids[None], labels[None]
        accum = input_ids.size(0)
        total_loss = 0.0
        for i in range(accum):  # gradient accumulation: micro-batches add up their gradients
            backend.set_gradient_sync(model, i == accum - 1)
            with backend.autocast():
                loss = model(input_ids[i], labels[i]) / accum
            loss.backward()
            total_loss = total_loss + loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, backend.run.max_gradient_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return total_loss, grad_norm

    return training_step


def train(cfg, progress=True, on_log=None):
    """Train `cfg` (a `gigagpt.config.Config`); returns the logged metrics rows.

    on_log(row) is called on the main process for every logged row (notebooks draw live plots with it).
    """
    run = cfg.run
    backend = get_backend(run)
    meta = data.load_meta(run.dataset)
    cfg = replace(cfg, model=fit_model_config(cfg, meta))
    train_tokens = data.load_tokens(run.dataset, "train")
    val_tokens = data.load_tokens(run.dataset, "val")
    backend.check_fits(cfg.model)

    model = backend.build_model(cfg.model)
    optimizer = backend.make_optimizer(model)
    scheduler = backend.make_scheduler(optimizer)
    start_step = backend.load_checkpoint(model, optimizer, scheduler) if run.checkpoint_path else 0
    training_step = make_training_step(backend, model, optimizer, scheduler)

    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    tokens_per_step = run.batch_size * run.sequence_length
    flops_per_token = scaling.flops_per_token(cfg.model, run.sequence_length)
    rows, clock = [], {"start": time.perf_counter(), "last": time.perf_counter(), "step": start_step}
    bar = tqdm(total=run.num_steps, initial=start_step, disable=not (progress and backend.is_main),
               desc="train", unit="step", dynamic_ncols=True)

    @backend.step_closure
    def log(step, loss, grad_norm):
        now = time.perf_counter()
        tokens_per_s = (step - clock["step"]) * tokens_per_step / (now - clock["last"])
        row = {
            "step": step,
            "loss": backend.reduce_mean(loss),
            "lr": lr_at(step - 1, run),  # the rate this step's update used
            "grad_norm": float(grad_norm),
            "tokens_per_s": tokens_per_s,
            "flops_per_s": tokens_per_s * flops_per_token,
            "elapsed_s": now - clock["start"],
        }
        if (run.eval_interval and step % run.eval_interval == 0) or step == run.num_steps:
            val_loss = estimate_loss(model, backend, val_tokens)
            if val_loss is not None:  # None: the backend evaluates elsewhere (Cerebras CSX)
                row["val_loss"] = val_loss
        if backend.is_main:
            rows.append(row)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
            if on_log:
                on_log(row)
        clock.update(last=time.perf_counter(), step=step)  # evaluating and logging don't count against tokens/s

    extra = {"config": cfg.to_dict(), "tokenizer": meta}

    @backend.checkpoint_closure
    def save_checkpoint(step):
        start = time.perf_counter()
        path = backend.save_checkpoint(step, model, optimizer, scheduler, extra)
        if backend.is_main and progress:
            bar.write(f"saved {path}")
        clock["last"] += time.perf_counter() - start  # nor does saving

    completed = start_step
    try:
        for step, input_ids, labels in backend.batches(train_tokens, start_step):
            loss, grad_norm = training_step(input_ids, labels)
            completed = step
            must_eval = run.eval_interval and step % run.eval_interval == 0
            if step % run.log_interval == 0 or must_eval or step == run.num_steps:
                log(step, loss, grad_norm)
            if (run.checkpoint_steps and step % run.checkpoint_steps == 0) or step == run.num_steps:
                save_checkpoint(step)
            bar.update(1)
    except KeyboardInterrupt:
        if completed > start_step:  # keep the work done so far
            save_checkpoint(completed)
        raise
    finally:
        bar.close()
        backend.finish()
    return rows
