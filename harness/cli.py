"""The `mezo-bench` command line (`mezo-bench <command> --help` for each command's options).

Every command prints `mezo-bench: error: ...` and exits 2 on invalid input, having written
nothing; `gate` exits 1 on a regression. `run` and `bench` write
results/<task>/<protocol>-v<version>/<profile>/<run id>.json and print a summary line per run
(zero-shot test, best dev and test accuracy, fraction of zero projected gradients).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.core.errors import HarnessError

DEFAULT_PROTOCOL = "benchmarks/sst2/protocol.toml"
DEFAULT_PAPER = "benchmarks/paper.toml"
DEFAULT_CLAIMS = "benchmarks/*/claims.toml"   # every task's ledger found (a glob, relative to the working folder)
DEFAULT_PROTOCOLS = "benchmarks/*/protocol.toml"   # the protocols whose grids progress.md covers (the same way)
DEFAULT_GATE = "benchmarks/gate.toml"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--protocol", default=None, help=f"protocol file (default: {DEFAULT_PROTOCOL})")
    choice.add_argument("--task", default=None,
                        help="the shipped protocol of this task, benchmarks/<task>/protocol.toml (sst2, sst5, trec, "
                             "rte, mnli, snli)")


def _load_protocol(args):
    """The protocol --protocol or --task names (default: SST-2's)."""
    from harness.protocol.loading import load_protocol, shipped_protocol_of_task

    if args.task is not None:
        return load_protocol(shipped_protocol_of_task(args.task))
    return load_protocol(args.protocol or DEFAULT_PROTOCOL)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    _add_protocol_options(parser)
    parser.add_argument("--profile", default="auto",
                        help="profile name, or 'auto': the protocol's profile for this device (default)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results)")
    parser.add_argument("--data-dir", default=None,
                        help="the task's data: an originals folder (GLUE TSVs, LM-BFF CSVs), a generated k-shot "
                             "folder (<k>-<seed>/ subfolders) or a root holding either under the task's LM-BFF "
                             "name; default $MEZO_BENCH_DATA_DIR, else the `datasets` library")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: cuda when torch sees a GPU, else cpu (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-phase memory measurement (recorded as not measured)")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=None,
                        help="steps between checkpoints under <out>/.runs/ (default: the protocol's [checkpoints])")
    parser.add_argument("--snapshot-every", type=_positive_int, default=None,
                        help="MeZO: steps between weight snapshots (default: the protocol's [checkpoints])")
    parser.add_argument("--restart", action="store_true",
                        help="discard a saved checkpoint of the run instead of resuming it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mezo-bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one protocol point and write its record")
    _add_run_options(run)
    run.add_argument("--variant", default="hf-mlm", help="variant name (default: hf-mlm)")
    run.add_argument("--k", type=_positive_int, help="examples per label (default: the profile's only k)")
    run.add_argument("--seed", type=int, help="data split and training seed (default: the profile's only seed)")
    run.add_argument("--lr", type=float, help="learning rate from the profile's grid (default: its only lr)")
    run.add_argument("--batch-size", type=_positive_int,
                     help="batch size from the grid for this k (default: its only value)")
    run.add_argument("--eps", type=float, help="MeZO perturbation scale from the grid (default: its only eps)")
    run.add_argument("--weight-decay", type=float, help="weight decay from the grid (default: its only value)")

    bench = commands.add_parser("bench", help="run every variant x k x seed x lr of a profile")
    _add_run_options(bench)
    bench.add_argument("--variant", action="append", dest="variants",
                       help="restrict to this variant (repeatable; default: the profile's variants)")
    bench.add_argument("--retry-failed", action="store_true", help="run failed points again")
    bench.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: the points one after another in this process (default); ray: a Ray task each")
    bench.add_argument("--address", default=None,
                       help="Ray cluster address (default: start a local one); --out must then be an absolute "
                            "path on storage every node sees")
    bench.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs each run requests (default: 1)")
    bench.add_argument("--gpus-per-run", type=float, default=None,
                       help="Ray: GPUs each run requests (default: 1 if --device cuda, or auto and this "
                            "machine sees CUDA; give 1 when the driver runs on a CPU-only head node)")
    bench.add_argument("--rerun-done", action="store_true",
                       help="run completed and diverged points again too (e.g. a new gate baseline)")

    status = commands.add_parser("status", help="every point of a profile's grid: completed, running, failed, ...")
    _add_protocol_options(status)
    status.add_argument("--profile", default="auto", help="profile (default: this machine's, as `bench` picks it)")
    status.add_argument("--variant", action="append", dest="variants", help="only this variant (repeatable)")
    status.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")

    splits = commands.add_parser("splits", help="write the exact k-shot train/dev/test TSVs a run uses")
    splits.add_argument("--task", default="sst2", help="task name: sst2, sst5, trec, rte, mnli, snli (default: sst2)")
    splits.add_argument("--k", type=_positive_int, required=True, help="examples per label in train and in dev")
    splits.add_argument("--seed", type=int, required=True, help="the split's seed (LM-BFF: 13, 21, 42, 87, 100)")
    splits.add_argument("--data-dir", default=None,
                        help="the task's originals or k-shot folder, or a root holding it (default: "
                             "$MEZO_BENCH_DATA_DIR, else the datasets library)")
    splits.add_argument("--out", type=Path, required=True,
                        help="folder for the split files, under LM-BFF's names (SST-2: train.tsv, dev.tsv, test.tsv; "
                             "sst-5/TREC: *.csv; MNLI: dev_matched.tsv, test_matched.tsv, test_mismatched.tsv)")

    report = commands.add_parser("report", help="aggregate records like the paper: tables and figures, and "
                                                "Table 18 across every task")
    report.add_argument("--results", type=Path, default=Path("results"), help="records to read (default: results)")
    report.add_argument("--paper", type=Path, default=Path(DEFAULT_PAPER), help=f"paper numbers (default: {DEFAULT_PAPER})")
    report.add_argument("--out", type=Path, default=Path("results/report"), help="output folder (default: results/report)")
    report.add_argument("--perf", type=Path, default=None,
                        help="stored performance runs for the perf table (default: <results>/perf)")
    report.add_argument("--protocols", type=Path, action="append", default=None,
                        help=f"a protocol whose grids progress.md covers (repeatable; default: every "
                             f"{DEFAULT_PROTOCOLS} found)")
    report.add_argument("--strict", action="store_true",
                        help="exit 1 (after writing the report) if any record was skipped as unreadable or "
                             "incomplete (default: skip each with one line on stderr, exit 0)")

    plan = commands.add_parser("plan", help="runs, steps, forward passes and estimated device-hours of a grid")
    _add_protocol_options(plan)
    plan.add_argument("--profile", default="paper", help="profile to plan (default: paper)")
    plan.add_argument("--variant", action="append", dest="variants", help="only this variant (repeatable)")
    plan.add_argument("--device", default="cuda", choices=["cpu", "cuda"], help="device to estimate for (default: cuda)")
    plan.add_argument("--perf", type=Path, default=Path("results/perf"),
                      help="stored performance runs (default: results/perf)")

    rebuild = commands.add_parser(
        "reconstruct", help="rebuild a MeZO run's fine-tuned weights from its trajectory (no forward pass)")
    rebuild.add_argument("record", type=Path, help="the run's record (its .trajectory.safetensors beside it)")
    rebuild.add_argument("--step", default="best", help="best (the tested checkpoint), final, or a step number")
    rebuild.add_argument("--out", type=Path, required=True, help="new folder: safetensors, config, tokenizer")
    rebuild.add_argument("--data-dir", default=None,
                         help="the task's data, for the tokenizer (default: $MEZO_BENCH_DATA_DIR, else datasets)")
    perf_store = commands.add_parser("perf-store", help="store a `nox -s perf` benchmark JSON under results/perf/<machine>/")
    perf_store.add_argument("json", type=Path, help="pytest-benchmark JSON written by --benchmark-json")
    perf_store.add_argument("--out", type=Path, default=Path("results/perf"), help="root folder (default: results/perf)")

    claims = commands.add_parser("claims", help="verdict for every claim of the ledgers, computed from records")
    claims.add_argument("--results", type=Path, default=Path("results"), help="records to read (default: results)")
    claims.add_argument("--claims", type=Path, action="append", default=None,
                        help=f"a claims ledger (repeatable; default: every {DEFAULT_CLAIMS} found, in name order); "
                             f"claim ids must be unique across the ledgers")
    claims.add_argument("--paper", type=Path, default=Path(DEFAULT_PAPER), help=f"paper numbers (default: {DEFAULT_PAPER})")
    claims.add_argument("--out", type=Path, default=None, help="also write claims.md and claims.json here")
    claims.add_argument("--comparisons-only", action="store_true",
                        help="print only the seed-paired comparisons (`[[comparison]]` entries), e.g. after a "
                             "stand-in run; --out still writes everything")
    claims.add_argument("--strict", action="store_true",
                        help="exit 1 (after the verdicts) if any record was skipped as unreadable or incomplete "
                             "(default: skip each with one line on stderr, exit 0)")

    gate = commands.add_parser("gate", help="compare candidate records with a baseline; exit 1 on a regression "
                                            "(a missing metric, run or unreadable record is one)")
    gate.add_argument("--baseline", type=Path, required=True, help="baseline records (folder or file)")
    gate.add_argument("--candidate", type=Path, required=True, help="candidate records (folder or file)")
    gate.add_argument("--config", type=Path, default=Path(DEFAULT_GATE), help=f"metrics and tolerances (default: {DEFAULT_GATE})")
    gate.add_argument("--out", type=Path, default=Path("gate-report"), help="folder for gate.md and gate.json (default: gate-report)")

    protocol = commands.add_parser("protocol", help="show a protocol's profiles and hashes; check or lock them")
    _add_protocol_options(protocol)
    protocol.add_argument("--profile", default=None, help="show only this profile")
    action = protocol.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="fail if a profile changed without a version bump")
    action.add_argument("--lock", action="store_true", help="record this version's hashes in the lock file")
    return parser


def _cmd_run(args) -> None:
    from harness.recipes.run import RunRequest, execute_run

    protocol = _load_protocol(args)
    path = execute_run(RunRequest(protocol=protocol, profile=args.profile, variant=args.variant, k=args.k,
                                  seed=args.seed, lr=args.lr, batch_size=args.batch_size, eps=args.eps,
                                  weight_decay=args.weight_decay, out_dir=args.out,
                                  data_dir=args.data_dir, device=args.device, progress=not args.no_progress,
                                  measure_memory=not args.no_memory, checkpoint_every=args.checkpoint_every,
                                  snapshot_every=args.snapshot_every, restart=args.restart))
    _print_summary([path])


def _cmd_bench(args) -> None:
    from harness.recipes.grid import grid_points, run_grid
    from harness.recipes.run import RunRequest, check_grid_inputs, resolve_device

    protocol = _load_protocol(args)
    protocol.check_lock()
    profile = protocol.resolve_profile_name(args.profile, resolve_device(args.device).type)
    points = grid_points(protocol, profile, args.variants or [])
    request = RunRequest(protocol=protocol, profile=profile, variant="", k=None, seed=None, lr=None, out_dir=args.out,
                         data_dir=args.data_dir, device=args.device, progress=not args.no_progress,
                         measure_memory=not args.no_memory, checkpoint_every=args.checkpoint_every,
                         snapshot_every=args.snapshot_every, restart=args.restart)
    check_grid_inputs(request, points)
    print(f"bench: protocol {protocol.name} v{protocol.version}, profile {profile}: {len(points)} run(s)",
          file=sys.stderr)
    if args.executor == "ray":
        from harness.recipes.ray_executor import run_grid_on_ray

        paths = run_grid_on_ray(request, points, address=args.address, retry_failed=args.retry_failed,
                                rerun_done=args.rerun_done, cpus_per_run=args.cpus_per_run,
                                gpus_per_run=args.gpus_per_run)
    else:
        paths = run_grid(request, points, retry_failed=args.retry_failed, rerun_done=args.rerun_done)
    if paths:
        _print_summary(paths)


def _cmd_status(args) -> None:
    from harness.recipes.run import resolve_device
    from harness.results.run_state import grid_status

    protocol = _load_protocol(args)
    profile = protocol.resolve_profile_name(args.profile, resolve_device("auto").type)
    _existing_folder_or_none(args.results, "--results")
    rows = grid_status(protocol, profile, args.variants or [], args.results)
    print(f"{protocol.name} v{protocol.version}, profile {profile}, under {args.results}:")
    for row in rows:
        point = row["point"]
        print(f"  {row['variant']:<24} k={point.k:<4} seed={point.seed:<4} lr={point.lr:<8g} bs={point.batch_size:<4} "
              f"eps={point.eps:<6g} wd={point.weight_decay:<5g} {row['state']:<10} {row['detail']}")
    counts = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f" (of {len(rows)})")


def _print_summary(paths: list[Path]) -> None:
    print(f"{'run':<60} {'zero-shot':>9} {'best dev':>8} {'test':>6} {'g==0':>6}  record")
    for path in paths:
        record = json.loads(path.read_text())
        metrics, sparsity = record["metrics"], record["sparsity"]
        zero = f"{sparsity['zero_fraction']:>6.3f}" if sparsity else f"{'-':>6}"
        dev, test = (f"{value:.4f}" if value is not None else "-"
                     for value in (metrics["best_dev_accuracy"], metrics["test_accuracy"]))
        status = f"  ({record['status']} at step {record['diverged_at']})" if record["status"] == "diverged" else ""
        print(f"{record['run_id']:<60} {metrics['zero_shot_test_accuracy']:>9.4f} "
              f"{dev:>8} {test:>6} {zero}  {path}{status}")


def _cmd_splits(args) -> None:
    from harness.core.files import check_output_dir
    from harness.tasks.data import load_task_data, make_k_shot_split

    check_output_dir(args.out, "--out")
    split = make_k_shot_split(load_task_data(args.task, args.data_dir), args.k, args.seed)
    written = split.write(args.out)
    hashes = split.sha256()
    for name, path in written.items():
        print(f"{path}  {len(split.lines[name])} examples  sha256 {hashes[name]}")


def _cmd_protocol(args) -> None:
    from harness.protocol.variants import get_variant

    protocol = _load_protocol(args)
    if args.lock:
        hashes = protocol.write_lock()
        print(f"locked {protocol.name} v{protocol.version} in {protocol.lock_path}")
        for name, digest in hashes.items():
            print(f"  {name}: {digest}")
        return
    if args.check:
        protocol.check_lock()
        print(f"{protocol.path}: version {protocol.version} matches its lock")
        return
    if args.profile:
        protocol.check_profile(args.profile)
    names = [args.profile] if args.profile else protocol.profiles
    print(f"{protocol.name} v{protocol.version} (task {protocol.task}): {protocol.description}")
    print(f"auto profile: {protocol.auto_profile}")
    for profile in names:
        for variant in protocol.profile_variants[profile]:
            print(f"\n[{profile} / {variant}] hash {protocol.settings_hash(profile, variant)}")
            print(f"  {get_variant(variant).description}")
            for key, value in protocol.run_settings(profile, variant).to_dict().items():
                print(f"  {key:<24} {value}")


def _cmd_report(args) -> int:
    """Records that cannot be read or lack required fields are skipped, one line each on stderr;
    with --strict the command then exits 1 (after writing the report)."""
    from harness.core.files import check_output_dir
    from harness.protocol.loading import load_protocol
    from harness.results.paper import load_paper
    from harness.results.perf import write_perf_report
    from harness.results.report import write_report
    from harness.results.store import read_records_checked

    check_output_dir(args.out, "--out")
    paper = load_paper(args.paper)
    records, problems = read_records_checked(args.results)
    for problem in problems:
        print(f"mezo-bench: skipped {problem}", file=sys.stderr)
    if not records:
        raise HarnessError(f"no run records under {args.results}" + (f" ({len(problems)} skipped)" if problems else ""))
    protocols = [load_protocol(path) for path in (args.protocols or sorted(Path().glob(DEFAULT_PROTOCOLS)))]
    for path in write_report(records, paper, args.out, protocols):
        print(path)
    for path in write_perf_report(args.perf or args.results / "perf", args.out):
        print(path)
    return 1 if problems and args.strict else 0


def _cmd_plan(args) -> None:
    from harness.results.plan import plan, to_text

    protocol = _load_protocol(args)
    _existing_folder_or_none(args.perf, "--perf")
    table = to_text(plan(protocol, args.profile, args.variants or [], args.perf, args.device))
    print(f"{protocol.name} v{protocol.version}, profile {args.profile}, on {args.device}:")
    print(table)


def _existing_folder_or_none(path: Path, option: str) -> None:
    """A folder read from may not exist yet (nothing there), but may not be a file."""
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{option} {path} is a file, not a folder")


def _cmd_reconstruct(args) -> None:
    from harness.recipes.reconstruct import reconstruct

    print(reconstruct(args.record, args.step, args.out, args.data_dir))


def _cmd_perf_store(args) -> None:
    from harness.results.perf import store_run

    print(store_run(args.json, args.out))


def _cmd_claims(args) -> int:
    """Every ledger given (default: each benchmarks/*/claims.toml); skips unreadable or
    incomplete records as `report` does (--strict: exit 1 at the end)."""
    from harness.core.files import check_output_dir
    from harness.results.claims import (
        judge_all,
        load_all_ledgers,
        summary_line,
        write_claims,
    )
    from harness.results.comparisons import NOT_MEASURED, judge_comparisons
    from harness.results.comparisons import summary_line as comparison_line
    from harness.results.paper import load_paper
    from harness.results.store import read_records_checked

    if args.out:
        check_output_dir(args.out, "--out")
    ledgers = args.claims or sorted(Path().glob(DEFAULT_CLAIMS))
    if not ledgers:
        raise HarnessError(f"no claims ledger found ({DEFAULT_CLAIMS} under {Path.cwd()}); give --claims")
    claims, comparisons = load_all_ledgers(ledgers, load_paper(args.paper))
    records, problems = read_records_checked(args.results)
    for problem in problems:
        print(f"mezo-bench: skipped {problem}", file=sys.stderr)
    if not records:
        raise HarnessError(f"no run records under {args.results}" + (f" ({len(problems)} skipped)" if problems else ""))
    verdicts = judge_all(claims, records)
    if not args.comparisons_only:
        for verdict in verdicts:
            print(summary_line(verdict))
        counts = {kind: sum(v.outcome == kind for v in verdicts) for kind in ("reproduced", "refuted", "not measured")}
        print(", ".join(f"{n} {kind}" for kind, n in counts.items()))
    compared = judge_comparisons(comparisons, records)
    if compared:
        print("seed-paired comparisons (95% t interval of the mean difference A - B):")
        quiet = args.comparisons_only   # then the undecided ones in one line: their variants are not in these runs
        for verdict in compared:
            if not (quiet and verdict.outcome == NOT_MEASURED):
                print(comparison_line(verdict))
        undecided = [v.comparison.id for v in compared if v.outcome == NOT_MEASURED]
        if quiet and undecided:
            print(f"not measured by these runs (`mezo-bench claims` says what each lacks): {', '.join(undecided)}")
        tally = {kind: sum(v.outcome == kind for v in compared) for kind in ("holds", "contradicted", "inconclusive",
                                                                              NOT_MEASURED)}
        print(", ".join(f"{n} {kind}" for kind, n in tally.items()))
    if args.out:
        markdown, data = write_claims(verdicts, args.out, compared)
        print(f"wrote {markdown} and {data}")
    return 1 if problems and args.strict else 0


def _cmd_gate(args) -> int:
    from harness.core.files import check_output_dir
    from harness.results.gate import (
        gate,
        load_gate_config,
        to_markdown,
        write_gate_report,
    )
    from harness.results.store import read_records_checked

    check_output_dir(args.out, "--out")
    metrics = load_gate_config(args.config)
    (baseline, baseline_problems), (candidate, candidate_problems) = (
        read_records_checked(args.baseline), read_records_checked(args.candidate))
    if not baseline and not baseline_problems:
        raise HarnessError(f"no run records under baseline {args.baseline}")
    if not candidate and not candidate_problems:
        raise HarnessError(f"no run records under candidate {args.candidate}")
    result = gate(baseline, candidate, metrics, baseline_problems, candidate_problems)
    print(to_markdown(result))
    for path in write_gate_report(result, args.out):
        print(f"wrote {path}")
    return 0 if result["passed"] else 1


COMMANDS = {"run": _cmd_run, "bench": _cmd_bench, "splits": _cmd_splits, "report": _cmd_report,
            "claims": _cmd_claims, "gate": _cmd_gate, "protocol": _cmd_protocol,
            "perf-store": _cmd_perf_store, "reconstruct": _cmd_reconstruct,
            "plan": _cmd_plan, "status": _cmd_status}


def main(argv: list[str] | None = None) -> int:
    """The command's exit status: 0, 1 (a `gate` regression), 2 (`mezo-bench: error: ...`), or
    130 after Ctrl-C, with one line: which run stopped where and what resumes it (RunInterrupted),
    else `mezo-bench: interrupted`."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except HarnessError as error:
        print(f"mezo-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:   # no traceback
        message = str(interrupt) or "interrupted"   # a RunInterrupted's names the run and what resumes it
        if message == "interrupted" and args.command == "bench":
            message += "; run the same command again to go on (done points are skipped, checkpointed ones resume)"
    # printed once the interrupt is let go: the frames it held are freed, so a progress bar it
    # interrupted closes (ends its line) first
    print(f"mezo-bench: {message}", file=sys.stderr)
    return 130   # 128 + SIGINT, what a shell reports for a command Ctrl-C ended


if __name__ == "__main__":
    sys.exit(main())
