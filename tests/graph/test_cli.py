from click.testing import CliRunner

from distgraph.cli_graph import graph as graph_cli
from distgraph.graph.partition import independent
from tests.graph.helpers import captured, randn
from tests.graph.test_partition import _tower_graph


def test_show_prints_a_saved_graph_and_export_writes_dot(tmp_path):
    g, _ = captured(lambda x: x.exp().sum(), randn(3))
    g.save(tmp_path / "g.dg")
    result = CliRunner().invoke(graph_cli, ["show", str(tmp_path / "g.dg")])
    assert result.exit_code == 0 and "= exp(%in0)" in result.output
    result = CliRunner().invoke(graph_cli, ["export", str(tmp_path / "g.dg"), str(tmp_path / "g.dot")])
    assert result.exit_code == 0 and (tmp_path / "g.dot").read_text().startswith("digraph G {")


def test_show_renders_a_plan(tmp_path):
    g, _ = _tower_graph()
    independent(g).save(tmp_path / "p.dg")
    result = CliRunner().invoke(graph_cli, ["show", str(tmp_path / "p.dg"), "--out", str(tmp_path / "p.dot")])
    assert result.exit_code == 0 and result.output.startswith("Plan(dag")
    assert "cluster_sg0" in (tmp_path / "p.dot").read_text()


def test_an_output_path_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path):
    g, _ = captured(lambda x: x.exp().sum(), randn(3))
    g.save(tmp_path / "g.dg")
    missing = tmp_path / "no_such_folder"
    for args in (
        ["export", str(tmp_path / "g.dg"), str(missing / "g.dot")],
        ["show", str(tmp_path / "g.dg"), "--out", str(missing / "g.dot")],
    ):
        result = CliRunner().invoke(graph_cli, args)
        assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
        assert (
            result.output.strip().splitlines()[-1]
            == f"Error: cannot write {missing / 'g.dot'}: No such file or directory"
        )
