"""Which Ray nodes still hold a placement group's bundles: lost-node detection for elastic runs.

A node is lost when the cluster marks it dead or when its raylet no longer takes a connection — a
killed node refuses at once, while the cluster's health checks mark it dead only ~15–30 s later.
"""

import socket
import time

import ray


def lost_nodes(pg, ranks):
    """Ids of the nodes that held the bundles of `ranks` and are gone: marked dead, or their raylet no
    longer takes a connection (a killed node is refused at once; the cluster's health checks mark it
    dead only ~15–30 s later). A worker whose node still answers died alone (a process fault)."""
    placed = ray.util.placement_group_table(pg).get("bundles_to_node_id", {})
    nodes = {n["NodeID"]: n for n in ray.nodes()}
    lost = set()
    for rank in ranks:
        node = nodes.get(placed.get(rank))
        if node is not None and not (node["Alive"] and _answers(node["NodeManagerAddress"], node["NodeManagerPort"])):
            lost.add(node["NodeID"])
    return lost


def _answers(host, port, timeout_s=1.0):
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def wait_until_dead(node_ids, timeout_s):
    """Wait until the cluster marks every node of `node_ids` dead (its placement-group bundles are
    released then, and its CPUs leave the totals); False if it has not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(n["Alive"] for n in ray.nodes() if n["NodeID"] in node_ids):
            return True
        time.sleep(0.2)
    return False


def bundles_on_live_nodes(pg):
    """How many of a placement group's bundles sit on nodes that are alive now."""
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    placed = ray.util.placement_group_table(pg).get("bundles_to_node_id", {})
    return sum(node in alive for node in placed.values())
