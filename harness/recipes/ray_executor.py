"""`mezo-bench bench --executor ray`: every grid point a Ray Core task on a Ray cluster (a local
one by default), with one GPU per run on GPU machines and `cpus_per_run` CPUs otherwise.

Each task runs its point through harness.recipes.grid.run_grid, so the point is claimed, skipped
when done and resumed from its checkpoint when started again. A worker or node that dies takes its
task with it; Ray retries the task (`max_retries`), and the retry takes over the dead claim and
resumes from the run's last checkpoint. The results root must therefore be storage every node
sees, named by an absolute path. The driver shows one progress bar for the grid and a line per
finished run; the workers' per-step bars are off. Ray Core tasks rather than Ray Tune: the grid
is fixed by the protocol and selection happens afterwards, so no search or scheduler is needed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from harness.core.errors import HarnessError
from harness.protocol.settings import GridPoint
from harness.recipes.run import RunRequest
from harness.results.run_state import RUNS, point_key
from harness.tasks.data import DATA_DIR_ENV


def _run_point(request: RunRequest, variant: str, point: GridPoint, retry_failed: bool, rerun_done: bool) -> list[str]:
    from harness.recipes.grid import run_grid

    # wait: a retry after a lost worker finds the dead worker's claim and waits until it is stale
    # (taken over at once when the dead process was on this host), then resumes its checkpoint
    return [str(path) for path in run_grid(request, [(variant, point)], retry_failed=retry_failed,
                                           rerun_done=rerun_done, wait=True)]


def run_grid_on_ray(request: RunRequest, points: list[tuple[str, GridPoint]], *, address: str | None = None,
                    retry_failed: bool = False, rerun_done: bool = False, cpus_per_run: float = 1.0,
                    gpus_per_run: float | None = None, max_retries: int = 3) -> list[Path]:
    """Run the points as Ray tasks; returns the records written. gpus_per_run: default 1 when
    the request's device is cuda (or auto on a machine whose driver sees CUDA), else 0."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'mezo-bench[ray]'") from None
    from tqdm.auto import tqdm

    root = Path(request.out_dir)
    if address not in (None, "local") and not root.is_absolute():
        raise HarnessError(f"--out {root} is relative: on a Ray cluster give an absolute path on storage every "
                           f"node sees")
    if gpus_per_run is None:
        gpus_per_run = 1.0 if request.device == "cuda" or (request.device == "auto" and _driver_sees_cuda()) else 0.0
    # Workers may run elsewhere: every path they use is absolute, the data folder travels with them.
    protocol = dataclasses.replace(request.protocol, path=Path(request.protocol.path).resolve())
    data_dir = request.data_dir or os.environ.get(DATA_DIR_ENV)
    quiet = dataclasses.replace(request, protocol=protocol, progress=False, out_dir=root.resolve(), restart=False,
                                data_dir=str(Path(data_dir).resolve()) if data_dir else None)
    if request.restart:   # here, once: a retried task must resume, not discard again
        for variant, point in points:
            shutil.rmtree(root / RUNS / point_key(protocol, request.profile, variant, point), ignore_errors=True)
    if address in (None, "local"):
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", ignore_reinit_error=True)
    else:
        ray.init(address=address, ignore_reinit_error=True)
    task = ray.remote(_run_point).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)
    pending = {task.remote(quiet, variant, point, retry_failed, rerun_done): (variant, point)
               for variant, point in points}
    written, failed = [], []
    with tqdm(total=len(pending), desc="grid", unit="run", dynamic_ncols=True) as bar:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            variant, point = pending.pop(done)
            label = f"{variant} k={point.k} seed={point.seed} lr={point.lr:g} batch={point.batch_size}"
            try:
                paths = ray.get(done)
            except Exception as error:   # the run's own error, after Ray's retries for lost workers
                failed.append(label)
                bar.write(f"failed: {label}: {type(error).__name__}: {str(error).splitlines()[-1][:300]}",
                          file=sys.stderr)
            else:
                written += [Path(path) for path in paths]
                bar.write(f"done: {label}" + (f" -> {paths[0]}" if paths else " (already done or running elsewhere)"),
                          file=sys.stderr)
            bar.set_postfix(failed=len(failed), running=len(pending), refresh=False)
            bar.update()
    if failed:
        raise HarnessError(f"{len(failed)} of {len(points)} run(s) failed: {'; '.join(failed)} (their records say why)")
    return written


def _driver_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
