"""Checks for notebook 03 (training on a CPU): the training step, one AdamW update, the learning-rate schedule,
temperature and top-k sampling, and a model without position embeddings.

    from gigagpt.course import training as check
    training_step = check.training_step(my_training_step)   # prints one line; returns what the notebook uses

Each check runs the learner's function beside the package's own code (gigagpt.train.make_training_step,
torch.optim.AdamW, gigagpt.optim.lr_at, gigagpt.sample.next_token) on a tiny model or random numbers, and
when they differ it tries the classic mistakes to say which one was made.
"""
import math
import warnings

import numpy as np
import torch

from gigagpt import optim
from gigagpt.backends.plain import TorchBackend
from gigagpt.config import load_config
from gigagpt.course import Wrong, compare, exercise
from gigagpt.sample import next_token as package_next_token
from gigagpt.train import make_training_step

# A model small enough that a few steps take milliseconds; a learning rate and clipping threshold chosen so
# that the first updates are large and clipping binds, so that each classic mistake changes the losses.
TINY_RUN = dict(width=32, depth=2, heads=2, vocab_size=65, max_position_embeddings=16, sequence_length=16,
                batch_size=4, num_steps=6, warmup_steps=2, learning_rate=1e-2, max_gradient_norm=0.1,
                weight_decay=0.1, device="cpu", dtype="float32", seed=0)
STEPS = 5  # steps each training-step check compares
_TOKENS = np.random.default_rng(0).integers(0, 65, 4096).astype(np.uint16)  # a stand-in corpus


def tiny_setup(**changes):
    """(backend, model, optimizer, scheduler) of a tiny run, exactly as `gigagpt.train.train` builds them."""
    cfg = load_config(None, **{**TINY_RUN, **changes})
    backend = TorchBackend(cfg.run)
    model = backend.build_model(cfg.model)
    optimizer = backend.make_optimizer(model)
    return backend, model, optimizer, backend.make_scheduler(optimizer)


# --- 1. the training step --------------------------------------------------------------------------------

def reference_training_step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    """One step of gigagpt.train.make_training_step for a (B, T) batch, in fp32, without accumulation."""
    loss = model(input_ids, labels)  # forward: the mean cross-entropy of the next-token predictions
    loss.backward()  # backward: d loss / d weight into every parameter's .grad
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_gradient_norm)  # the norm before clipping
    optimizer.step()  # AdamW, at the learning rate the schedule set for this step
    scheduler.step()  # the next step's learning rate
    optimizer.zero_grad(set_to_none=True)  # else the next backward adds to these gradients
    return loss.detach(), grad_norm


def _mistaken_step(mistake):
    """The reference step with one classic mistake, to recognise it in a learner's losses."""

    def step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
        if mistake == "scheduler first":
            with warnings.catch_warnings():  # torch warns about exactly this order
                warnings.simplefilter("ignore")
                scheduler.step()
        loss = model(input_ids, labels)
        loss.backward()
        norm = max_gradient_norm if mistake != "no clipping" else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), norm)
        optimizer.step()
        if mistake not in ("no scheduler", "scheduler first"):
            scheduler.step()
        if mistake != "no zero_grad":
            optimizer.zero_grad(set_to_none=True)
        return loss.detach(), grad_norm

    return step


STEP_MISTAKES = {
    "no clipping": "your losses match a step without gradient clipping: call "
                   "torch.nn.utils.clip_grad_norm_(model.parameters(), max_gradient_norm) after backward() and "
                   "before optimizer.step()",
    "no zero_grad": "your losses match a step that never clears the gradients, so each backward() adds to the "
                    "last step's: call optimizer.zero_grad() once per step",
    "no scheduler": "your losses match a step that never advances the schedule: the learning rate stays at its "
                    "first value (0: warmup starts from 0); call scheduler.step() after optimizer.step()",
    "scheduler first": "your losses match a schedule one step ahead: call scheduler.step() after "
                       "optimizer.step(), not before",
}


def run_steps(step_fn, steps=STEPS, **changes):
    """[(loss, grad_norm)] of `steps` calls of step_fn on a fresh tiny model and the same batches."""
    backend, model, optimizer, scheduler = tiny_setup(**changes)
    out = []
    for _, x, y in backend.batches(_TOKENS, 0):
        if len(out) == steps:
            break
        result = step_fn(model, optimizer, scheduler, x[0], y[0], backend.run.max_gradient_norm)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Wrong(f"return two values, (loss, grad_norm); got {type(result).__name__}")
        out.append(tuple(float(v.detach() if torch.is_tensor(v) else v) for v in result))
    return out


def package_steps(steps=STEPS, **changes):
    """The same, with the step gigagpt.train builds (make_training_step): what the learner's must match."""
    backend, model, optimizer, scheduler = tiny_setup(**changes)
    step = make_training_step(backend, model, optimizer, scheduler)
    out = []
    for _, x, y in backend.batches(_TOKENS, 0):
        if len(out) == steps:
            break
        out.append(tuple(float(v) for v in step(x, y)))  # x: (1, B, T), one micro-batch
    return out


def _same(a, b, atol=1e-5):
    return all(abs(x - y) <= atol for x, y in zip(a, b))


@exercise("training_step", reference_training_step)
def training_step(fn):
    want = package_steps()
    got = run_steps(fn)
    losses, want_losses = [g[0] for g in got], [w[0] for w in want]
    if abs(losses[0] - want_losses[0]) > 1e-5:
        raise Wrong(f"the first loss (before any update) is {losses[0]:.6g}, expected {want_losses[0]:.6g}: the "
                    f"loss is what model(input_ids, labels) returns")
    if not _same(losses, want_losses):
        for mistake, hint in STEP_MISTAKES.items():
            if _same(losses, [r[0] for r in run_steps(_mistaken_step(mistake))]):
                raise Wrong(hint)
        k = next(i for i in range(STEPS) if abs(losses[i] - want_losses[i]) > 1e-5)
        raise Wrong(f"the loss of step {k + 1} is {losses[k]:.6g}, expected {want_losses[k]:.6g}, so the update "
                    f"before it differs: forward, backward, clip, optimizer.step(), scheduler.step(), zero_grad()")
    compare("grad_norm (the norm clip_grad_norm_ returns, before clipping) of each step",
            torch.tensor([g[1] for g in got]), torch.tensor([w[1] for w in want]), atol=1e-5, rtol=1e-5)


# --- 2. one AdamW update -----------------------------------------------------------------------------------

def reference_adamw_update(param, grad, m, v, step, lr, betas=optim.BETAS, eps=1e-8, weight_decay=0.1):
    """One AdamW update of one tensor (step counts from 1), as torch.optim.AdamW does it: (param, m, v)."""
    beta1, beta2 = betas
    param = param * (1 - lr * weight_decay)  # decoupled weight decay: shrink the weights, apart from the gradient
    m = beta1 * m + (1 - beta1) * grad  # running mean of the gradient: its direction, smoothed ("momentum")
    v = beta2 * v + (1 - beta2) * grad**2  # running mean of its square: the size of each weight's gradient
    m_hat = m / (1 - beta1**step)  # both start at 0: undo that bias in the first steps
    v_hat = v / (1 - beta2**step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def _mistaken_adamw(mistake):
    def update(param, grad, m, v, step, lr, betas, eps, weight_decay):
        beta1, beta2 = (betas[1], betas[0]) if mistake == "betas swapped" else betas
        if mistake == "L2":
            grad = grad + weight_decay * param
        elif mistake != "no decay":
            param = param * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        m_hat, v_hat = (m, v) if mistake == "no bias correction" else (m / (1 - beta1**step), v / (1 - beta2**step))
        denominator = (v_hat + eps).sqrt() if mistake == "eps in sqrt" else v_hat.sqrt() + eps
        return param - lr * m_hat / denominator, m, v

    return update


ADAMW_MISTAKES = {
    "no bias correction": "it matches Adam without bias correction: m and v start at 0, so divide them by "
                          "(1 - beta1**step) and (1 - beta2**step) before using them",
    "L2": "it matches Adam with the decay added to the gradient (L2 regularisation): AdamW shrinks the weights "
          "directly, param * (1 - lr * weight_decay), and keeps the decay out of m and v",
    "no decay": "it matches an update without weight decay: multiply param by (1 - lr * weight_decay)",
    "eps in sqrt": "it matches sqrt(v_hat + eps): eps goes outside the square root, sqrt(v_hat) + eps",
    "betas swapped": "it matches beta1 and beta2 swapped: beta1 (0.9) smooths the gradient m, beta2 (0.95) its "
                     "square v",
}
ADAMW_SETTINGS = dict(lr=0.05, betas=optim.BETAS, eps=1e-8, weight_decay=0.1)


def _adamw_inputs(steps=6):
    """A (4, 8) weight and `steps` gradients whose sizes span 1e-5..1 (so eps and the scale matter)."""
    g = torch.Generator().manual_seed(0)
    param = torch.randn(4, 8, generator=g)
    scale = 10 ** (-5 * torch.rand(4, 8, generator=g))
    return param, [torch.randn(4, 8, generator=g) * scale for _ in range(steps)]


def run_adamw(update, param, grads):
    """The weights after each update: [param after step 1, after step 2, ...]."""
    m, v, out = torch.zeros_like(param), torch.zeros_like(param), []
    for step, grad in enumerate(grads, start=1):
        result = update(param.clone(), grad.clone(), m.clone(), v.clone(), step, **ADAMW_SETTINGS)
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise Wrong(f"return three tensors, (param, m, v); got {type(result).__name__}")
        param, m, v = result
        out.append(param.detach().clone())
    return out


def torch_adamw(param, grads):
    """What torch.optim.AdamW (the single-tensor implementation) makes of the same gradients."""
    p = torch.nn.Parameter(param.clone())
    s = ADAMW_SETTINGS
    opt = torch.optim.AdamW([p], lr=s["lr"], betas=s["betas"], eps=s["eps"], weight_decay=s["weight_decay"],
                            foreach=False, fused=False)
    out = []
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


@exercise("adamw_update", reference_adamw_update)
def adamw_update(fn):
    param, grads = _adamw_inputs()
    want = torch_adamw(param, grads)
    got = run_adamw(fn, param, grads)
    for step, (g, w) in enumerate(zip(got, want), start=1):
        if not isinstance(g, torch.Tensor) or g.shape != w.shape or not torch.allclose(g, w, atol=1e-5, rtol=0):
            for mistake, hint in ADAMW_MISTAKES.items():
                mistaken = run_adamw(_mistaken_adamw(mistake), param, grads)[step - 1]
                if isinstance(g, torch.Tensor) and g.shape == w.shape and torch.allclose(g, mistaken, atol=1e-5):
                    raise Wrong(f"step {step}: {hint}")
            compare(f"param after step {step}", g, w, atol=1e-5)


# --- 3. the learning-rate schedule ---------------------------------------------------------------------------

SCHEDULES = [dict(learning_rate=2e-3, warmup_steps=50, num_steps=400),
             dict(learning_rate=6e-4, warmup_steps=10, num_steps=100, decay_steps=60)]  # decay ends at step 70


def _phase(step, run):
    if step < run.warmup_steps:
        return "warmup"
    return "decay" if step <= run.warmup_steps + run.decay_steps else "after"


@exercise("lr_at", optim.lr_at)
def lr_at(fn):
    for settings in SCHEDULES:
        run = load_config(None, **settings).run
        where = f"warmup_steps={run.warmup_steps}, decay_steps={run.decay_steps}, learning_rate={run.learning_rate:g}"
        wrong = {}  # step -> (got, want) where they differ
        for step in range(run.num_steps + 20):
            got, want = fn(step, run), optim.lr_at(step, run)
            got = float(got) if isinstance(got, torch.Tensor) else got
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                raise Wrong(f"lr_at({step}, run) returned {got!r:.60}: return a number")
            if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                wrong[step] = got, want
        if not wrong:
            continue
        first = min(wrong)
        if _phase(first, run) == "warmup":
            got, want = wrong[first]
            off_by_one = math.isclose(got, run.learning_rate * (first + 1) / run.warmup_steps)
            raise Wrong(f"in the warmup ({where}), step {first} gives {got:.6g}, expected {want:.6g}: "
                        + ("off by one: step 0 must give 0, and the rate reaches its peak at step warmup_steps"
                           if off_by_one else "grow linearly from 0 at step 0: learning_rate * step / warmup_steps"))
        in_decay = [s for s in wrong if _phase(s, run) == "decay"]
        if in_decay:  # the step where it is furthest off says most
            step = max(in_decay, key=lambda s: abs(wrong[s][0] - wrong[s][1]))
            (got, want), progress = wrong[step], (step - run.warmup_steps) / run.decay_steps
            to_zero = math.isclose(got, run.learning_rate * 0.5 * (1 + math.cos(math.pi * progress)), rel_tol=1e-6)
            floor = f"; it ends at MIN_LR_RATIO ({optim.MIN_LR_RATIO}) * learning_rate, not at 0" if to_zero else ""
            raise Wrong(f"in the decay ({where}), step {step} ({progress:.0%} of the way) gives {got:.6g}, expected "
                        f"{want:.6g}: min + (peak - min) * 0.5 * (1 + cos(pi * progress)), progress = "
                        f"(step - warmup_steps) / decay_steps{floor}")
        got, want = wrong[first]
        raise Wrong(f"after the decay ({where}), step {first} gives {got:.6g}, expected {want:.6g}: once "
                    f"warmup_steps + decay_steps have passed the rate stays at MIN_LR_RATIO * learning_rate "
                    f"(clamp the progress at 1)")


# --- 4. temperature and top-k sampling ----------------------------------------------------------------------

DRAWS = 4000  # rows of one distribution, to judge the distribution of a learner's draws


def _logits(rows=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(rows, 65, generator=g)


def _draw(fn, logits, temperature, top_k, seed):
    out = fn(logits, temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(seed))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (logits.size(0), 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Wrong(f"for logits of shape {tuple(logits.shape)} return token ids of shape ({logits.size(0)}, 1), "
                    f"got {shape}")
    return out


def _frequency_of_top(fn, temperature, top_k):
    """(how often the most likely token was drawn, its reference probability, the tokens drawn)."""
    logits = _logits(1).expand(DRAWS, -1)
    drawn = _draw(fn, logits, temperature, top_k, seed=1)[:, 0]
    scaled = logits[0] / temperature
    if top_k:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], -math.inf)
    probs = scaled.softmax(-1)
    top = int(logits[0].argmax())
    return float((drawn == top).float().mean()), float(probs[top]), drawn


@exercise("next_token", package_next_token)
def next_token(fn):
    logits = _logits()
    try:
        greedy = _draw(fn, logits, 0, None, seed=0)
    except NotImplementedError:
        raise
    except (ZeroDivisionError, RuntimeError) as e:
        raise Wrong(f"temperature=0 raised {type(e).__name__}: temperature 0 means greedy decoding, so return "
                    f"logits.argmax(-1, keepdim=True) before dividing by the temperature")
    compare("with temperature 0 (greedy), the token of each row", greedy.long(), logits.argmax(-1, keepdim=True))

    k = 5
    _, _, drawn = _frequency_of_top(fn, 1.0, k)
    order = _logits(1)[0].argsort(descending=True).tolist()
    outside = sorted(set(drawn.tolist()) - set(order[:k]))
    if outside:
        raise Wrong(f"with top_k={k} you drew token {outside[0]}, which is not among the {k} most likely: set every "
                    f"logit below the k-th largest (torch.topk(logits, k).values[:, -1:]) to -inf")
    if order[k - 1] not in set(drawn.tolist()):
        raise Wrong(f"with top_k={k} the {k}th most likely token never came up in {DRAWS} draws: keep the logits "
                    f">= the k-th largest (you may keep only k-1)")

    for temperature in (0.5, 2.0):
        seen, p, _ = _frequency_of_top(fn, temperature, None)
        if abs(seen - p) > 5 * math.sqrt(p * (1 - p) / DRAWS) + 0.01:
            raise Wrong(f"at temperature {temperature} the most likely token came up in {seen:.0%} of {DRAWS} draws, "
                        f"expected about {p:.0%}: divide the logits by the temperature, then take the softmax")

    for temperature, top_k, seed in ((1.0, None, 0), (0.8, 5, 1), (1.3, 20, 2)):
        got = _draw(fn, logits, temperature, top_k, seed)
        want = package_next_token(logits, temperature, top_k, generator=torch.Generator().manual_seed(seed))
        if not torch.equal(got.long(), want):
            raise Wrong(f"the distribution looks right, but with temperature={temperature}, top_k={top_k} and the same "
                        f"generator your tokens {got[:, 0].tolist()} are not gigagpt's {want[:, 0].tolist()}: draw "
                        f"once per call, torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)")


# --- 5. an ablation: no position embeddings -----------------------------------------------------------------

def reference_without_position_embeddings(model):
    """The model with its position embeddings zeroed and frozen, so that they add nothing, now or later."""
    with torch.no_grad():
        model.wpe.weight.zero_()
    model.wpe.weight.requires_grad_(False)  # zero alone is not enough: the optimizer would learn them again
    return model


def position_spread(model, token=7):
    """How far the logits at positions 1..T-1 are from position 0's when every input token is the same. Without
    position information a causal model must give every position the same output (it sees copies of one vector)."""
    T = model.config.max_position_embeddings
    with torch.no_grad():
        logits = model(torch.full((1, T), token))[0].float()
    spread = (logits - logits[0]).abs().amax(-1)
    return float(spread.max()), int(spread.argmax())


@exercise("without_position_embeddings", reference_without_position_embeddings)
def without_position_embeddings(fn):
    backend, model, _, _ = tiny_setup()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = fn(model)
    if not isinstance(result, torch.nn.Module) or not hasattr(result, "wpe"):
        raise Wrong(f"return the model (the GPT you were given, changed); got {type(result).__name__}")
    changed = [name for name, p in result.named_parameters() if name in before and name != "wpe.weight"
               and not torch.equal(p.detach(), before[name])]
    if changed:
        raise Wrong(f"{changed[0]} changed: leave every weight but the position embeddings (wpe) as it was")
    spread, where = position_spread(result)
    if spread > 1e-4:
        raise Wrong(f"with every input token the same, position {where}'s logits differ from position 0's by "
                    f"{spread:.3g}: the position embeddings still reach the model; set model.wpe.weight to zeros")
    optimizer = backend.make_optimizer(result)
    step = make_training_step(backend, result, optimizer, backend.make_scheduler(optimizer))
    trained = {name: p.detach().clone() for name, p in result.named_parameters()}
    for _, (_, x, y) in zip(range(3), backend.batches(_TOKENS, 0)):
        step(x, y)
    spread, where = position_spread(result)
    if spread > 1e-4:
        raise Wrong(f"after 3 training steps, position {where}'s logits differ from position 0's by {spread:.3g}: "
                    f"zero is not enough, the optimizer trains wpe again; freeze it too "
                    f"(model.wpe.weight.requires_grad_(False))")
    if all(torch.equal(p.detach(), trained[name]) for name, p in result.named_parameters()):
        raise Wrong("after 3 training steps no weight changed: freeze the position embeddings only")
