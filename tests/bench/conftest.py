"""Benchmarks write their figures to `bench-out/` by default: run these tests in a scratch folder so none
lands in the checkout."""

import pytest


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
