"""The small examples run and do what they say."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def test_linear_regression_recovers_the_line():
    import linear_regression

    w, b = linear_regression.main(["--steps", "200"])
    assert abs(w - 3) < 0.05 and abs(b + 2) < 0.05


def test_gan_generator_learns_the_ring():
    import gan

    result = gan.main(["--steps", "800", "--quiet"])
    assert result["quality"] > 0.1 and result["modes_covered"] >= 2  # at step 0: 0.00 and 0
