"""The module fuzz (tests/nn/test_module_fuzz.py) over its second menu, tests/nn/module_menu_new.py: the nn
families added after the first menu was written. DG_FUZZ_FROM shifts the draws (e.g. 1000 hunts draws
1000.. instead of 0..) and DG_FUZZ_TIMES multiplies their number, to hunt more seeds than CI runs.
"""

import os
import random

import pytest

pytest.importorskip("torch")

from tests.nn.module_menu_new import FAMILIES  # noqa: E402

START, TIMES = int(os.environ.get("DG_FUZZ_FROM", "0")), int(os.environ.get("DG_FUZZ_TIMES", "1"))


@pytest.mark.parametrize("family", FAMILIES)
def test_new_module_options_match_torch(family):
    make, draws = FAMILIES[family]
    for i in range(START, START + draws * TIMES):
        r = random.Random(f"{family}-{i}")
        try:
            make(r)
        except AssertionError as e:
            raise AssertionError(f"{family} draw {i} (random.Random('{family}-{i}')): {e}") from None
