"""`distgraph run --max-restarts K` restarts on any failure of an attempt, as torchrun (which sees only a rank's
exit status): also a script's own ValueError/KeyError, which launch raises as itself. No Ray: launch is a fake."""

from click.testing import CliRunner

import distgraph as dg
from distgraph.cli import main


def test_max_restarts_restarts_after_a_scripts_own_error_too(tmp_path, monkeypatch):
    script = tmp_path / "flaky.py"
    script.write_text("pass\n")
    attempts = []

    def launch(fn, workers, args=(), **kwargs):
        attempts.append(args[3])  # (the restart count run_script sets as TORCHELASTIC_RESTART_COUNT)
        if len(attempts) == 1:
            raise KeyError("a shard the loader could not find")  # as launch raises a rank's KeyError

    monkeypatch.setattr(dg.distributed, "launch", launch)
    result = CliRunner().invoke(main, ["run", "-np", "2", "--max-restarts", "1", str(script)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert attempts == [0, 1] and "restarting all 2 ranks (1/1)" in result.output
