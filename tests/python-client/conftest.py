"""python-etcd3 (PyPI `etcd3`) against a real `kvnode dev` cluster.

Needs a built kvnode (KVNODE_BIN, or $CARGO_TARGET_DIR/debug/kvnode) and the packages in
requirements.txt. Without them the tests skip and say why, unless RAFTKV_REQUIRE_PYTHON_CLIENT=1
makes that a failure.
"""

import os
import sys
from pathlib import Path

# python-etcd3's generated protobuf code predates protobuf 4's C implementation.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devcluster import dev_cluster, kvnode_binary  # noqa: E402


def require(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("RAFTKV_REQUIRE_PYTHON_CLIENT") == "1":
        pytest.fail(f"{what} is missing and RAFTKV_REQUIRE_PYTHON_CLIENT=1")
    pytest.skip(f"SKIPPED: {what} is missing")


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    binary = kvnode_binary()
    require("kvnode binary (build it or set KVNODE_BIN)", binary is not None and binary.exists())
    try:
        import etcd3  # noqa: F401
    except ImportError:
        require("the etcd3 package (pip install -r tests/python-client/requirements.txt)", False)
    with dev_cluster(binary, tmp_path_factory.mktemp("pyclient")) as (clients, _):
        yield clients


@pytest.fixture
def clients(endpoints):
    """One python-etcd3 client per member."""
    import etcd3

    made = [etcd3.client(host=e.split(":")[0], port=int(e.split(":")[1]), timeout=10) for e in endpoints]
    yield made
    for c in made:
        c.close()


def pytest_configure(config):
    # python-etcd3's watch threads outlive a closed client and complain on their way out.
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnhandledThreadExceptionWarning")
    # Its generated code uses protobuf calls protobuf deprecated since.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:etcd3")
