"""A real `kvnode dev` cluster for the Python test suites: finding the binary, free ports, and
starting members that are ready to serve (their /readyz answers)."""

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0


def kvnode_binary() -> Path | None:
    """KVNODE_BIN, or the kvnode cargo built ($CARGO_TARGET_DIR, debug before release)."""
    if os.environ.get("KVNODE_BIN"):
        return Path(os.environ["KVNODE_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        if (target / profile / "kvnode").exists():
            return target / profile / "kvnode"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_base_port(members: int) -> int:
    """A base port whose whole `kvnode dev` range (base + 10*i + {0,1,2}) is free right now."""
    for _ in range(50):
        base = free_port()
        if base + 10 * members > 65000:
            continue
        sockets = []
        try:
            for i in range(members):
                for off in range(3):
                    s = socket.socket()
                    sockets.append(s)
                    s.bind(("127.0.0.1", base + 10 * i + off))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class Timeout(AssertionError):
    pass


def wait_for(what: str, check, deadline: float = DEADLINE):
    """Polls `check` until it returns a truthy value; raises Timeout naming `what`."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise Timeout(f"timed out waiting for {what}")
        time.sleep(0.25)


@contextlib.contextmanager
def dev_cluster(binary: Path, directory: Path, members: int = 3, extra: list[str] | None = None):
    """Runs `kvnode dev` until the block ends; yields (client host:port list, metrics host:port
    list) once every member is ready."""
    base = free_base_port(members)
    log = open(directory / "kvnode.log", "w+")
    node = subprocess.Popen(
        [str(binary), *(extra or []), "dev", "--members", str(members), "--base-port", str(base),
         "--dir", str(directory / "dev")],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    clients = [f"127.0.0.1:{base + 10 * i}" for i in range(members)]
    metrics = [f"127.0.0.1:{base + 10 * i + 2}" for i in range(members)]
    try:
        def ready(m: str) -> bool:
            if node.poll() is not None:
                raise AssertionError(f"kvnode dev exited with {node.returncode}: {(directory / 'kvnode.log').read_text()}")
            return get(f"http://{m}/readyz")[0] == 200

        for m in metrics:
            wait_for(f"{m}/readyz", lambda m=m: ready(m))
        yield clients, metrics
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
