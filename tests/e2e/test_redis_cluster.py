"""The whole stack on a Redis Cluster of three masters (`MESH_REDIS_CLUSTER=1`), started from the
`redis-server` binary: the end-to-end flow over REST through the edge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from meshctl.embedded import EmbeddedRedisCluster
from tests.e2e import test_edge
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    started = EmbeddedRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, cluster: EmbeddedRedisCluster) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_REDIS_URL=cluster.url, MESH_REDIS_CLUSTER="1") as mesh:
        yield mesh


def test_the_end_to_end_flow_passes_with_a_redis_cluster(mesh: Mesh, cluster: EmbeddedRedisCluster) -> None:
    test_edge.test_a_person_goes_through_every_public_route_over_rest(mesh)

    # The stack's Redis was the cluster, which holds what the flow left (nonces, budgets,
    # windows, marks, streams). A client that did not speak cluster would have been sent away
    # (MOVED) from every slot its node does not hold, and the flow would have failed.
    (part,) = [part for part in mesh.stack()["parts"] if part["name"] == "redis"]
    assert (part["address"], part["embedded"]) == (cluster.url, False)
    sizes = []
    for node in cluster.nodes:
        with redis.Redis(host=node.host, port=node.port) as client:
            sizes.append(client.dbsize())
    assert sum(sizes) > 0
