"""The README's snippet builds the pieces, makes real updates and prints a number that moves: the return of the later
attempts of the hidden-door task climbs towards the Bayes optimum (.4 / .8 / 1), with no warning on the way."""
import ast
import contextlib
import io
import os
import re
import warnings
from pathlib import Path

from tests.test_docs import blocks

ROOT = Path(__file__).resolve().parents[1]


def test_the_snippet_learns_to_use_what_earlier_attempts_revealed(tmp_path):
    code = "\n".join(c for info, c in blocks(ROOT / "README.md") if info == "python")
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings(record=True) as seen, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            # torchrl warns about its own classes when torchrl.collectors is first imported (as pytest.ini says)
            warnings.filterwarnings("ignore", "Creating .*WeightUpdater which inherits", DeprecationWarning)
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    assert not [str(w.message) for w in seen]
    rows = [ast.literal_eval(m.group(1)) for m in re.finditer(r"return per attempt: (\[.*\])", out.getvalue())]
    assert len(rows) == 3, out.getvalue()
    first, last = rows[0], rows[-1]
    assert last[2] > first[2] + 0.2 and last[2] > last[0] + 0.2, rows  # later attempts gain what the first revealed
    assert last[0] > 0.3, rows  # the first attempt searches (optimum 0.4)
