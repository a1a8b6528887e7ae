"""The notebooks learners open (notebooks/) are generated from the complete ones we write (solutions/).

    python scripts/make_learner_notebooks.py           # (re)write notebooks/NN_*.ipynb from solutions/
    python scripts/make_learner_notebooks.py --check   # exit 1, naming them, if any committed one differs

Each solutions/NN_*.ipynb goes through nbgrader's ClearSolutions preprocessor: the code between
`### BEGIN SOLUTION` and `### END SOLUTION` becomes `raise NotImplementedError()` (which the notebook's
checks report as [todo], carrying on with the reference), and outputs are cleared. Edit solutions/, never
notebooks/: tests/test_notebooks.py fails when the two drift.
"""
import argparse
import sys
from pathlib import Path

import nbformat
from nbgrader.preprocessors import ClearOutput, ClearSolutions

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS, NOTEBOOKS = ROOT / "solutions", ROOT / "notebooks"


def learner_version(solution_path):
    """The learner's notebook (as text) for one solution notebook."""
    nb = nbformat.read(solution_path, as_version=4)
    nb, _ = ClearSolutions(enforce_metadata=False).preprocess(nb, {})
    nb, _ = ClearOutput().preprocess(nb, {})
    return nbformat.writes(nb) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if notebooks/ is stale")
    args = parser.parse_args(argv)
    stale = []
    for solution in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        target, text = NOTEBOOKS / solution.name, learner_version(solution)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target.name)
            if not args.check:
                target.write_text(text, encoding="utf-8")
    orphans = sorted({p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")} - {p.name for p in SOLUTIONS.glob("*.ipynb")})
    if args.check and (stale or orphans):
        sys.exit(f"notebooks/ is not what solutions/ generates: {', '.join(stale + orphans)} "
                 f"(edit solutions/, then run python scripts/make_learner_notebooks.py)")
    print(f"{'stale' if args.check else 'wrote'}: {', '.join(stale) or 'nothing'}"
          + (f"; notebooks without a solution: {', '.join(orphans)}" if orphans else ""))


if __name__ == "__main__":
    main()
