"""Exercise checks for the course notebooks: instant feedback on the learner's code, one line each.

    from gigagpt.course import tokenization as check
    get_batch = check.get_batch(my_get_batch)   # prints one line; returns what the notebook goes on with

Each check runs the learner's function against the package's reference and prints exactly one line:
`[pass] name`, `[fail] name: <what is wrong, where, by how much>` or `[todo] name: ...` (the function still
raises NotImplementedError, as the learner versions of the notebooks ship). It returns the learner's
function when it passed and the reference otherwise, so a skipped or wrong exercise never blocks the rest
of the notebook. Checks take at most a few seconds on two CPU cores.
"""
import functools

import torch


class Wrong(Exception):
    """Raised inside a check with the hint the learner sees after `[fail] name: `."""


def exercise(name, reference):
    """Decorate `test(fn)`, which raises Wrong(hint) when `fn` is wrong, into the check learners call."""

    def decorate(test):
        @functools.wraps(test)
        def check(fn):
            try:
                test(fn)
            except NotImplementedError:
                print(f"[todo] {name}: replace `raise NotImplementedError()` with your code, then run the cell again")
                return reference
            except Wrong as e:
                print(f"[fail] {name}: {e}")
                return reference
            except Exception as e:  # the learner's code raised: say what and where it came from
                print(f"[fail] {name}: your code raised {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
                return reference
            print(f"[pass] {name}")
            return fn

        check.reference = reference
        return check

    return decorate


def compare(what, got, want, atol=1e-5, rtol=0.0):
    """Raise Wrong with a specific hint unless `got` matches `want`: its type, its shape, then the element
    that is furthest off (which one, what it is, what it should be)."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{what} should be a tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise Wrong(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        got, want = got.detach().double(), want.detach().double()
        error = (got - want).abs() - rtol * want.abs()
        if not torch.isfinite(got).all():
            index = tuple(int(i) for i in torch.nonzero(~torch.isfinite(got))[0])
            raise Wrong(f"{what}{list(index)} is {got[index].item()}: not a finite number")
        if error.numel() and error.max() > atol:
            index = tuple(int(i) for i in torch.nonzero(error == error.max())[0])
            where = list(index) if index else ""
            raise Wrong(f"{what}{where} is {got[index].item():.6g}, expected {want[index].item():.6g} "
                        f"(off by {(got - want).abs()[index].item():.3g}; tolerance {atol:g})")
        return
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            raise Wrong(f"{what} should be a list of {len(want)}, got {got!r:.80}")
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise Wrong(f"{what}[{i}] is {g!r:.60}, expected {w!r:.60}")
        return
    if isinstance(want, (int, float)) and not isinstance(want, bool):  # a number: say how far, not the answer
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise Wrong(f"{what} should be a number, got {got!r:.60}")
        if abs(got - want) > atol + rtol * abs(want):
            off = f"{abs(got / want - 1):.0%}" if want else f"by {abs(got):.3g}"
            raise Wrong(f"{what} is {got:,.6g}: {off} too {'high' if got > want else 'low'}")
        return
    if got != want:
        raise Wrong(f"{what} is {got!r:.80}, expected {want!r:.80}")
