"""progress.md: what of each protocol's grids the records cover, and what is not yet run.

For every profile of the protocols given (the shipped benchmarks/<task>/protocol.toml) that has a
record, and every `standin` profile (the stand-in's grid this project runs on CPU, so one not started
is listed too; `standin-main` is the main job's, whose runs stay on the machine that made them), a row
per variant: the points of its grid (every k, seed and grid value)
and how many have a completed, diverged or failed record, or none. Computed from the records and
the protocol files alone (never from locks or checkpoints, so the file is the same wherever it is
regenerated): a point being run right now is "not run" until its record lands.
"""

from __future__ import annotations

from harness.results.run_state import latest_status, point_key

ALWAYS_LISTED = ("standin",)   # profiles listed even before their first record
STATES = ("completed", "diverged", "failed")


def progress_rows(protocols: list, records: list[dict]) -> list[dict]:
    """A row per (task, protocol, version, profile, variant) as described above; `protocols`: loaded
    harness.protocol.loading.Protocol objects."""
    latest = latest_status(records)
    profiles_run = {(r["task"], r["protocol"]["name"], r["protocol"]["version"], r["protocol"]["profile"])
                    for r in records}
    rows = []
    for protocol in protocols:
        for profile, variants in protocol.profile_variants.items():
            if (protocol.task, protocol.name, protocol.version, profile) not in profiles_run \
                    and profile not in ALWAYS_LISTED:
                continue
            for variant in variants:
                points = list(protocol.run_settings(profile, variant).grid())
                states = [latest.get(point_key(protocol, profile, variant, point), {}).get("status") for point in points]
                rows.append({"task": protocol.task, "protocol": protocol.name, "version": protocol.version,
                             "profile": profile, "variant": variant, "points": len(points),
                             **{state: states.count(state) for state in STATES},
                             "not_run": sum(state not in STATES for state in states),
                             "k": sorted({point.k for point in points})})
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["# Progress: the grids the records cover", "",
             "Every profile with a record and every `standin` profile of the shipped protocols: per "
             "variant, its grid's points (k x seeds x grid values) and how many have a completed, diverged or "
             "failed record; **not run**: no record yet (a grid is resumed by `mezo-bench bench`; a verdict waits "
             "for a complete grid).", "",
             "| task | protocol | profile | variant | k | points | completed | diverged | failed | not run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        not_run = f"**{row['not_run']}**" if row["not_run"] else "0"
        lines.append(f"| {row['task']} | {row['protocol']} v{row['version']} | {row['profile']} | {row['variant']} | "
                     f"{', '.join(map(str, row['k']))} | {row['points']} | {row['completed']} | {row['diverged']} | "
                     f"{row['failed']} | {not_run} |")
    if not rows:
        lines.append("| – | – | – | – | – | – | – | – | – | – |")
    done = sum(r["points"] - r["not_run"] for r in rows)
    lines += ["", f"{done} of {sum(r['points'] for r in rows)} points have a record."]
    return "\n".join(lines) + "\n"
