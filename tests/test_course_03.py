"""Notebook 03's exercise checks (gigagpt.course.training): the reference passes, the untouched stub is [todo],
and classic mistakes are [fail] with the hint that names them."""
import math

import pytest
import torch

from gigagpt import optim
from gigagpt.course import training as check


def verdict(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # exactly one line per check
    return lines[0]


def stub(*args, **kwargs):
    raise NotImplementedError()


CHECKS = [(check.training_step, check.reference_training_step), (check.adamw_update, check.reference_adamw_update),
          (check.lr_at, optim.lr_at), (check.next_token, check.package_next_token),
          (check.without_position_embeddings, check.reference_without_position_embeddings)]
NAMES = ["training_step", "adamw_update", "lr_at", "next_token", "without_position_embeddings"]


@pytest.mark.parametrize("run_check, reference", CHECKS, ids=NAMES)
def test_reference_passes_and_is_returned(run_check, reference, capsys):
    assert run_check(reference) is reference
    assert verdict(capsys).startswith("[pass] ")


@pytest.mark.parametrize("run_check, reference", CHECKS, ids=NAMES)
def test_stub_is_todo_and_returns_the_reference(run_check, reference, capsys):
    assert run_check(stub) is reference
    assert verdict(capsys).startswith("[todo] ")


def test_reference_step_is_the_packages():
    """The reference the notebook falls back on trains exactly as gigagpt.train's step does."""
    mine, package = check.run_steps(check.reference_training_step), check.package_steps()
    assert [v for row in mine for v in row] == pytest.approx([v for row in package for v in row], abs=1e-6)


# --- the training step --------------------------------------------------------------------------------------

def step_without_zero_grad(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    loss = model(input_ids, labels)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_gradient_norm)
    optimizer.step()
    scheduler.step()
    return loss, grad_norm


def step_clipping_after_the_update(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    loss = model(input_ids, labels)
    loss.backward()
    optimizer.step()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_gradient_norm)
    scheduler.step()
    optimizer.zero_grad()
    return loss, grad_norm


def step_without_schedule(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    optimizer.zero_grad()  # at the start is fine too
    loss = model(input_ids, labels)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_gradient_norm)
    optimizer.step()
    return loss, grad_norm


def step_returning_the_loss_only(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    loss, _ = check.reference_training_step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm)
    return loss


def step_returning_the_clipped_norm(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
    loss, grad_norm = check.reference_training_step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm)
    return loss, min(float(grad_norm), max_gradient_norm)


@pytest.mark.parametrize("wrong, hint", [
    (step_without_zero_grad, "never clears the gradients"),
    (step_clipping_after_the_update, "without gradient clipping"),
    (step_without_schedule, "never advances the schedule"),
    (step_returning_the_loss_only, "return two values, (loss, grad_norm)"),
    (step_returning_the_clipped_norm, "grad_norm (the norm clip_grad_norm_ returns, before clipping)"),
])
def test_training_step_mistakes(wrong, hint, capsys):
    assert check.training_step(wrong) is check.reference_training_step
    line = verdict(capsys)
    assert line.startswith("[fail] training_step: ") and hint in line, line


def test_a_zero_grad_at_the_start_of_the_step_passes(capsys):
    def step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm):
        optimizer.zero_grad()
        return check.reference_training_step(model, optimizer, scheduler, input_ids, labels, max_gradient_norm)

    check.training_step(step)
    assert verdict(capsys) == "[pass] training_step"


# --- one AdamW update -----------------------------------------------------------------------------------------

def adam_with_l2(param, grad, m, v, step, lr, betas, eps, weight_decay):
    grad = grad + weight_decay * param  # Adam's "weight decay": into the gradient
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad**2
    m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def adamw_without_bias_correction(param, grad, m, v, step, lr, betas, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad**2
    return param - lr * m / (v.sqrt() + eps), m, v


def adamw_in_place_bias_corrected(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """Right, written differently: in place, with the bias corrections folded into the step size."""
    param.mul_(1 - lr * weight_decay)
    m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    step_size = lr / (1 - betas[0] ** step)
    param.addcdiv_(m, v.sqrt() / math.sqrt(1 - betas[1] ** step) + eps, value=-step_size)
    return param, m, v


def test_adamw_mistakes(capsys):
    check.adamw_update(adam_with_l2)
    line = verdict(capsys)
    assert line.startswith("[fail] adamw_update: step 1: ") and "L2 regularisation" in line, line
    check.adamw_update(adamw_without_bias_correction)
    assert "without bias correction" in verdict(capsys)
    check.adamw_update(adamw_in_place_bias_corrected)
    assert verdict(capsys) == "[pass] adamw_update"


# --- the schedule ---------------------------------------------------------------------------------------------

def lr_warmup_off_by_one(step, run):
    if step < run.warmup_steps:
        return run.learning_rate * (step + 1) / run.warmup_steps
    return optim.lr_at(step, run)


def lr_cosine_to_zero(step, run):
    if step < run.warmup_steps:
        return run.learning_rate * step / run.warmup_steps
    progress = min((step - run.warmup_steps) / run.decay_steps, 1.0)
    return run.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def lr_without_clamp(step, run):
    if step < run.warmup_steps:
        return run.learning_rate * step / run.warmup_steps
    progress = (step - run.warmup_steps) / run.decay_steps
    return run.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("wrong, hint", [
    (lr_warmup_off_by_one, "in the warmup (warmup_steps=50, decay_steps=350, learning_rate=0.002), step 0 gives "
                           "4e-05, expected 0: off by one"),
    (lr_cosine_to_zero, "not at 0"),
    (lr_without_clamp, "after the decay (warmup_steps=50, decay_steps=350, learning_rate=0.002), step 401"),
])
def test_lr_at_mistakes(wrong, hint, capsys):
    check.lr_at(wrong)
    line = verdict(capsys)
    assert line.startswith("[fail] lr_at: ") and hint in line, line


# --- sampling -------------------------------------------------------------------------------------------------

def times_the_temperature(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits * temperature
    if top_k:
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


def top_k_minus_one(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits <= kth, -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


def divides_by_zero(logits, temperature=1.0, top_k=None, generator=None):
    return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)


def samples_each_row_alone(logits, temperature=1.0, top_k=None, generator=None):
    """The right distribution, drawn another way: not the package's tokens for the same generator."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    probs = gigagpt_probs(logits, temperature, top_k)
    u = torch.rand(probs.size(0), 1, generator=generator)
    return (probs.cumsum(-1) < u).sum(-1, keepdim=True).clamp(max=probs.size(-1) - 1)


def gigagpt_probs(logits, temperature, top_k):
    logits = logits / temperature
    if top_k:
        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, -1:], -math.inf)
    return logits.softmax(-1)


@pytest.mark.parametrize("wrong, hint", [
    (times_the_temperature, "at temperature 0.5 the most likely token came up in"),
    (top_k_minus_one, "the 5th most likely token never came up"),
    (divides_by_zero, "temperature 0 means greedy decoding"),
    (samples_each_row_alone, "the distribution looks right"),
])
def test_next_token_mistakes(wrong, hint, capsys):
    assert check.next_token(wrong) is check.package_next_token
    line = verdict(capsys)
    assert line.startswith("[fail] next_token: ") and hint in line, line


# --- the ablation ---------------------------------------------------------------------------------------------

def zero_only(model):
    with torch.no_grad():
        model.wpe.weight.zero_()
    return model


def freeze_only(model):
    model.wpe.weight.requires_grad_(False)
    return model


def zero_everything_in_the_embeddings(model):
    with torch.no_grad():
        model.wpe.weight.zero_()
        model.wte.weight.zero_()
    model.wpe.weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("wrong, hint", [
    (zero_only, "after 3 training steps, position"),
    (freeze_only, "the position embeddings still reach the model"),
    (zero_everything_in_the_embeddings, "wte.weight changed"),
    (lambda model: None, "return the model"),
])
def test_ablation_mistakes(wrong, hint, capsys):
    check.without_position_embeddings(wrong)
    line = verdict(capsys)
    assert line.startswith("[fail] without_position_embeddings: ") and hint in line, line


def test_no_position_embeddings_means_no_position_information():
    """What the check relies on: a causal GPT fed copies of one token gives every position the same output
    exactly when it has no position embeddings."""
    _, model, _, _ = check.tiny_setup()
    assert check.position_spread(model)[0] > 1e-2
    assert check.position_spread(check.reference_without_position_embeddings(model))[0] < 1e-5
