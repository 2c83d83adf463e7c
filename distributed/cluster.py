"""Starting or joining Ray: a local runtime with explicit CPUs, or an existing cluster by address.

* No address (and no ``RAY_ADDRESS``): a private local Ray is started with
  ``num_cpus = workers x threads`` (each worker reserves its threads) and a modest object store; nothing to start by hand. It listens
  on 127.0.0.1 only (every port: GCS, raylet, object manager, agents, workers), keeps its
  session in a temporary folder of its own, removed at :func:`shutdown`, and is watched
  by :mod:`tatonnet.distributed.reaper`, which ends it if this process dies (even by
  SIGKILL). ``ray.init`` installs SIGTERM handlers of its own; they are put back as they
  were, so the command line's handling of SIGTERM (:mod:`tatonnet.cli.signals`) stands.
* ``--address HOST:PORT`` or ``RAY_ADDRESS``: join that cluster. Ray 2.60 enables token
  authentication by default: export the cluster's token (``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH``) with ``RAY_AUTH_MODE=token``; only a loopback test cluster
  should run with ``RAY_AUTH_MODE=disabled``. ``address="auto"`` is never used: it could
  attach to any Ray found on the machine.

The address is probed with a plain TCP connection first, so an unreachable cluster is a
one-line :class:`ClusterError` within seconds, not a long hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tatonnet.environment.errors import first_line

OBJECT_STORE_BYTES = 512 * 2**20
LOOPBACK = "127.0.0.1"


class _LocalRay:
    """The private local Ray this process started: its session folder and watchdog."""

    def __init__(self) -> None:
        # Unix socket paths live in here: keep the folder short (108-byte limit)
        base = tempfile.gettempdir()
        if len(base) > 40 and os.path.isdir("/tmp"):
            base = "/tmp"
        self.temp_dir = os.path.realpath(tempfile.mkdtemp(prefix="tatonnet-ray-", dir=base))
        reaper = Path(__file__).with_name("reaper.py")
        self.reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(reaper), self.temp_dir, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal does not reach it
        )  # fmt: skip

    def close(self, timeout: float = 15.0) -> None:
        """After ``ray.shutdown``: the watchdog ends what is left and removes the folder."""
        with contextlib.suppress(OSError):
            self.reaper.stdin.close()
        try:
            self.reaper.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - it exits on its own
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


_local: _LocalRay | None = None
_description: str | None = None  # what connect() started or joined


@contextlib.contextmanager
def _keep_sigterm():
    """``ray.init`` replaces the SIGTERM handler (with ``sys.exit``): put it back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved if saved is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _loopback_only():
    """Make ``ray.init`` choose 127.0.0.1 as the node's address.

    Ray binds its servers to the node address; on Linux it resolves 127.0.0.1 to the
    machine's outward address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off (its
    single-machine mode), which its processes read from the environment and the driver
    from ``ray_constants``. Also silences the token-auth notice (auth stays on).
    """
    import ray._private.ray_constants as ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    saved_level = auth_log.level
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    auth_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        auth_log.setLevel(saved_level)


class ClusterError(RuntimeError):
    """Ray could not be started or reached (one-line message)."""


def _probe(address: str, timeout: float = 5.0) -> None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"--address: expected HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


def connect(
    workers: int,
    address: str | None = None,
    object_store_bytes: int | None = None,
    threads: int = 1,
) -> str:
    """Make sure Ray is initialized for ``workers`` actors of ``threads`` CPUs each;
    returns a description.

    ``object_store_bytes`` sizes a local runtime's object store (default
    :data:`OBJECT_STORE_BYTES`); a joined cluster keeps its own.
    """
    need = workers * max(1, int(threads))
    import ray

    global _description
    if ray.is_initialized():
        if _description is None:
            return "ray (already initialized)"
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < need:
            raise ClusterError(
                f"{_description} has {cpus:g} CPUs; --workers {workers} --threads {threads} "
                f"needs {need}"
            )
        return _description
    address = address or os.environ.get("RAY_ADDRESS") or None
    options = dict(
        logging_level=logging.WARNING, log_to_driver=True, configure_logging=True
    )  # fmt: skip
    if address:
        if address == "auto":
            raise ClusterError("--address auto is refused: give the cluster's HOST:PORT")
        _probe(address)
        try:
            with _keep_sigterm():
                ray.init(address=address, **options)
        except Exception as exc:  # Ray raises several types (ConnectionError, auth errors...)
            first = first_line(exc)
            raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from None
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < need:
            ray.shutdown()
            raise ClusterError(
                f"the Ray cluster at {address} has {cpus:g} CPUs; --workers {workers} "
                f"--threads {threads} needs {need}"
            )
        _description = f"ray cluster at {address} ({cpus:g} CPUs)"
        return _description
    global _local
    _local = _LocalRay()  # before ray.init: a driver killed during start-up is covered too
    try:
        with _loopback_only(), _keep_sigterm():
            ray.init(
                num_cpus=need,
                object_store_memory=object_store_bytes or OBJECT_STORE_BYTES,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                _temp_dir=_local.temp_dir,
                **options,
            )
    except Exception as exc:
        shutdown()
        first = first_line(exc)
        raise ClusterError(f"cannot start a local Ray runtime: {first}") from None
    _description = f"local ray ({need} CPUs)"
    return _description


def node_cpus() -> list[int]:
    """CPUs of every alive node of the connected Ray (one entry per node)."""
    import ray

    return [
        int(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0) >= 1
    ]


def is_worker_loss(exc: BaseException) -> bool:
    """True when ``exc`` says a Ray actor's process died (not an error raised in its code)."""
    try:
        import ray.exceptions
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError)


def shutdown() -> None:
    """Disconnect from Ray; a private local Ray is stopped and its session folder removed."""
    global _local, _description
    _description = None
    # A signal during `import ray` leaves a half-imported module behind (its attributes
    # missing): then no Ray was started, and there is nothing to shut down.
    ray = sys.modules.get("ray")
    try:
        try:
            initialized = ray is not None and ray.is_initialized()
        except AttributeError:  # half-imported
            ray, initialized = None, False
        # also after a ray.init interrupted half-way (its node exists, unconnected)
        if ray is not None and (initialized or _local is not None):
            ray.shutdown()
    finally:
        local, _local = _local, None
        if local is not None:
            local.close()
