"""Joining the processes of a multi-host job into one JAX runtime, and checking that they agree.

A multi-process job runs the same command in every process (one per host, or one per GPU);
``jax.distributed.initialize`` connects them through a coordinator (process 0), after which
``jax.devices()`` lists every device of every process and one ``jax.jit`` spans them all.

JAX ends the process from C++ when it cannot connect (SIGABRT after its timeout; a segfault
when the coordinator's port is taken), which no Python ``except`` can turn into a message. So
the port is checked before connecting, and a watchdog thread explains the failure and exits
cleanly just before JAX's own deadline would.
"""

import json
import logging
import os
import socket
import sys
import threading
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from seg_jax import console
from seg_jax.errors import ConfigError, SegJaxError, first_few
from seg_jax.workdir import differences

log = logging.getLogger(__name__)

# JAX's deadline is set this much later than the watchdog's, so the watchdog speaks first.
DEADLINE_MARGIN_S = 10
MAX_LISTED_DIFFERENCES = 8


class DistributedError(SegJaxError):
    """The processes of a multi-process job could not be joined or disagree."""


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit():
        raise ConfigError(f'--coordinator_address={address!r} must be HOST:PORT, e.g. '
                          '10.0.0.1:12345 (the host of process 0 and a free port on it).')
    return host.strip('[]'), int(port)


def _port_is_free(port: int) -> bool:
    """Whether the coordinator can listen on ``port``. SO_REUSEADDR as gRPC sets it, so a port
    left in TIME_WAIT by a previous run counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(('', port))
        except OSError:
            return False
    return True


def _is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _explain_timeout(address: str | None, num_processes: int | None, process_id: int | None,
                     timeout_s: int) -> str:
    if address is None:  # the job came from JAX's cluster detection
        return (f'error: this process could not join the job that JAX detected from the cluster '
                f'environment (SLURM, Open MPI, Cloud TPU, Kubernetes) within {timeout_s} s: not '
                'all of its processes started, or they cannot reach process 0. Check that every '
                'task runs the same command, pass --coordinator_address, --num_processes and '
                '--process_id explicitly, or --distributed=off for a single-process run.')
    host, port = _split_address(address)
    if process_id != 0 and not _is_listening(host, port):
        cause = (f'nothing answers at {address}: process 0 is not running there, or the address '
                 'or port is wrong, or a firewall blocks it')
    else:
        cause = (f'not all {num_processes} processes joined: some were not started, or were '
                 'started with a different --coordinator_address or --num_processes')
    return (f'error: process {process_id} of {num_processes} could not join the job at {address} '
            f'within {timeout_s} s: {cause}. Start every process with the same '
            '--coordinator_address and --num_processes and a distinct --process_id (launch/ has '
            'scripts that do), or raise --distributed_timeout if hosts start slowly.')


def _connect(address: str | None, num_processes: int | None, process_id: int | None,
             timeout_s: int) -> None:
    """``jax.distributed.initialize`` under a watchdog; ``None`` arguments are left to JAX's
    cluster detection."""
    if process_id == 0 and address is not None:
        port = _split_address(address)[1]
        if not _port_is_free(port):
            raise DistributedError(
                f'Process 0 cannot start the coordinator on port {port}: another program (an '
                'earlier run that is still alive?) is listening there. Stop it, or pick another '
                'port in --coordinator_address for every process.')
    connected = threading.Event()

    def watchdog() -> None:
        if not connected.wait(timeout_s):
            sys.stderr.write(
                _explain_timeout(address, num_processes, process_id, timeout_s) + '\n')
            sys.stderr.flush()
            os._exit(1)

    threading.Thread(target=watchdog, daemon=True, name='seg_jax-join-watchdog').start()
    try:
        jax.distributed.initialize(address, num_processes, process_id,
                                   initialization_timeout=timeout_s + DEADLINE_MARGIN_S)
    finally:
        connected.set()


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> None:
    """Joins this process to its job; a single-process run is left as it is.

    Explicit arguments (from flags or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID environment variables) name the job on plain machines. Without them, JAX's
    own cluster detection (Cloud TPU, SLURM, Open MPI, Kubernetes) joins the job if the process
    runs inside one; otherwise the run is single-process.
    """
    explicit = {'--coordinator_address': coordinator_address, '--num_processes': num_processes,
                '--process_id': process_id}
    given = {name for name, value in explicit.items() if value is not None}
    if given:
        if len(given) < 3:
            raise ConfigError(f'A multi-process run needs all of {", ".join(explicit)}; only '
                              f'{", ".join(sorted(given))} were given.')
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f'--process_id={process_id} must be in 0..{num_processes - 1} '
                              f'for --num_processes={num_processes}.')
        _split_address(coordinator_address)
        if num_processes > 1:
            _connect(coordinator_address, num_processes, process_id, timeout_s)
    else:
        try:
            _connect(None, None, None, timeout_s)
        except ValueError as error:
            # JAX found no cluster environment to read the job from: a single-process run.
            if 'coordinator_address' not in str(error):
                raise
            return
    log.info('Process %d of %d joined: %d local and %d global devices.',
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count(), extra=console.EVERY_PROCESS)


def broadcast_text(text: str) -> str:
    """Process 0's ``text`` on every process."""
    data = np.frombuffer(text.encode(), np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    padded = np.zeros(length, np.uint8)
    padded[:min(length, data.size)] = data[:length]
    return bytes(multihost_utils.broadcast_one_to_all(padded)).decode()


def check_same_run(config: ml_collections.ConfigDict, **arguments: Any) -> None:
    """Raises on every process unless all processes run the same config and ``arguments``.

    Processes that disagree would otherwise run different programs in lockstep and hang, or
    silently mix two experiments in one checkpoint.
    """
    if jax.process_count() == 1:
        return
    mine = json.loads(json.dumps({'config': config.to_dict(), **arguments}, sort_keys=True,
                                 default=str))
    leader = json.loads(broadcast_text(json.dumps(mine, sort_keys=True)))
    changes = differences(leader, mine)
    agree = multihost_utils.process_allgather(np.int32(not changes))
    if agree.all():
        return
    others = ', '.join(str(p) for p in np.flatnonzero(agree == 0))
    detail = ''
    if changes:
        detail = (' This process differs (process 0 -> here) in '
                  f'{first_few(changes, MAX_LISTED_DIFFERENCES)}.')
    raise DistributedError(
        f'Process(es) {others} were started with a different config or flags than process 0.'
        f'{detail} Start every process with the same command (same --config file contents, '
        'overrides, --workdir and --mode).')
