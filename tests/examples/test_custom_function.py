"""examples/custom_function.py: the custom Function passes gradcheck and trains where plain exp overflows."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def test_safe_exp_is_gradient_checked_and_recovers_the_poisson_model_from_an_overflowing_start():
    import custom_function

    result = custom_function.main(["--quiet"])
    assert result["gradcheck"]
    assert math.isinf(result["plain_exp_loss"])  # what the custom op exists to avoid
    assert math.isfinite(result["first_loss"]) and result["last_loss"] < result["first_loss"]
    assert result["weight_error"] < 0.1  # started 99 away in the bias
