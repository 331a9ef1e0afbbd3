"""Every search at 2x, 4x, 8x and 16x greedy's tokens: accuracy against tokens and wall time.

Greedy runs first on the problems; its mean model tokens per problem G sizes the budgets
B = m * G. Each search then runs with `--budget B` (a hard cap on every token charged to the
problem) and is sized to spend it: mcts and mcts-q run until the budget binds (their round counts are set far above
what B buys); best-of-n draws m samples. The per-token beam is not capped (capped, it leaves a
long problem with no finished text: 65.8% at 2x, below greedy) but sized so that its mean spend
stays under B, which favours it (it may spend more on a long problem). Every run is a resumable `latent-search eval` directory
(OUT/<search>-<m>x), so an interrupted bench goes on where it stopped. Each run is paired
against the beam at the same budget, and against greedy, on the same problems (exact McNemar).
No search reads the gold answer.

Run:  python bench/budgets.py --limit 500 --out runs/budgets
      (writes OUT/budgets.{json,md,png}; --only beam mcts ... runs a subset; --multiples 2 4)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from paired import correct, mcnemar_p  # noqa: E402

SEARCHES = ("beam", "mcts", "best-of-n", "mcts-gumbel", "mcts-q", "mcts-value", "mcts-check-value")
"""mcts-value: MCTS judged by the model's Q head alone (no equation check anywhere in it);
mcts-check-value: the equation check, its ties broken by the Q head's value (``--scorer equations-q``)."""
LARGE = 100_000
"""Rounds of mcts / mcts-q: far more than any budget here buys, so the budget is what binds."""


WIDTHS = {2: 4, 4: 9, 8: 13, 16: 20}
"""The per-token beam's width at each budget multiple: the widest whose mean spend, measured on
these problems, stays under the budget (4 wide spent 105 tokens, 9 wide 198, 11 wide 265, 18
wide 777: a wider beam keeps faulted hypotheses that ramble on to the length cap)."""


def spec_for(search: str, m: int, budget: int):
    from latent_search.search import SearchSpec

    if search == "beam":
        # Not capped: a beam holds no finished text until its hypotheses end, so a cap that
        # binds on a long problem leaves it without an answer. It is sized so that its mean
        # spend stays under the budget instead (the table reports what it spent).
        return SearchSpec("beam", beam_width=WIDTHS[m])
    if search == "mcts":
        return SearchSpec("mcts", budget=budget, rounds=LARGE)
    if search == "mcts-gumbel":
        # Sequential halving plans its phases over a known number of simulations: about what
        # the budget buys (a simulation's walk costs a few tokens), not an unbounded count.
        return SearchSpec("mcts", budget=budget, rounds=max(16, budget // 4), gumbel=True)
    if search == "mcts-q":
        return SearchSpec("mcts-q", budget=budget, rounds=LARGE, candidates="token")
    if search in ("mcts-value", "mcts-check-value"):
        scorer = "q" if search == "mcts-value" else "equations-q"
        return SearchSpec("mcts", budget=budget, rounds=LARGE, scorer=scorer)
    return SearchSpec("best-of-n", budget=budget, n=m)


def run(name: str, spec, args) -> dict:
    from eval.runner import EvalConfig, run_eval

    cfg = EvalConfig(task="arith", model=args.model, search=spec, limit=args.limit,
                     batch_size=args.batch_size)  # fmt: skip
    t0 = time.perf_counter()
    summary = run_eval(cfg, args.out / name)
    print(f"[{time.perf_counter() - t0:6.0f}s] {name}: {summary['accuracy']:.1%}, "
          f"{summary['tokens_per_problem']:.0f} tokens", flush=True)  # fmt: skip
    return {"run": name, **summary}


def finished(run: Path, limit: int) -> bool:
    path = run / "results.jsonl"
    return path.is_file() and len(path.read_text().splitlines()) >= limit


def paired(run: Path, base: Path) -> dict | None:
    """McNemar of ``run`` against ``base`` on the same problems; None while ``base`` is not
    finished (it lacks some of the problems)."""
    a, b = correct(run), correct(base)
    if set(a) - set(b):
        return None
    wins = sum(a[k] and not b[k] for k in a)
    losses = sum(b[k] and not a[k] for k in a)
    return {"wins": wins, "losses": losses, "p": mcnemar_p(wins, losses)}


def table(rows: list[dict]) -> str:
    lines = [
        "| search | budget | accuracy [95% CI] | tokens / problem | s / problem | s / 1k tokens "
        "| vs beam (wins / losses, p) | vs greedy p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        vb = r.get("vs_beam")
        beam = f"{vb['wins']} / {vb['losses']}, {vb['p']:.3g}" if vb else "–"
        vg = f"{r['vs_greedy']['p']:.3g}" if r.get("vs_greedy") else "–"
        lines.append(
            f"| {r['search']} | {r['multiple']}× ({r['budget']}) | {r['accuracy']:.1%} "
            f"[{lo:.1%}, {hi:.1%}] | {r['tokens_per_problem']:.0f} | "
            f"{r['seconds_per_problem']:.3f} | {r['s_per_ktok']:.2f} | {beam} | {vg} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], greedy: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=120, sharey=True)
    for ax, key, label in (
        (axes[0], "tokens_per_problem", "model tokens per problem"),
        (axes[1], "seconds_per_problem", "wall seconds per problem (this machine)"),
    ):
        for s in SEARCHES:
            pts = sorted((r[key], 100 * r["accuracy"]) for r in rows if r["search"] == s)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=s)
        ax.axhline(100 * greedy["accuracy"], color="gray", ls="--", label="greedy")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("arith, held-out problems: every search at 2x-16x greedy's tokens")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("runs/budgets"))
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--multiples", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--only", nargs="*", choices=SEARCHES, default=None)
    ap.add_argument("--report", action="store_true",
                    help="run nothing: tabulate and plot the runs of OUT that are finished")  # fmt: skip
    args = ap.parse_args()
    from cola_models.atomic import write_atomic
    from latent_search.search import SearchSpec

    print(f"machine: {machine()}", flush=True)
    greedy = run("greedy", SearchSpec(), args)
    g_tokens = greedy["tokens_per_problem"]
    rows = []
    # Search by search (the beam first: every other run is paired against it), so that an
    # interrupted bench has whole curves.
    for s in [s for s in SEARCHES if not args.only or s in args.only]:
        for m in args.multiples:
            budget = round(m * g_tokens)
            if args.report and not finished(args.out / f"{s}-{m}x", args.limit):
                continue
            r = run(f"{s}-{m}x", spec_for(s, m, budget), args)
            r.update(search=s, multiple=m, budget=budget)
            r["s_per_ktok"] = 1000 * r["seconds_per_problem"] / r["tokens_per_problem"]
            r["vs_greedy"] = paired(args.out / r["run"], args.out / "greedy")
            if s != "beam" and (args.out / f"beam-{m}x" / "results.jsonl").is_file():
                r["vs_beam"] = paired(args.out / r["run"], args.out / f"beam-{m}x")
            rows.append(r)
            write_atomic(args.out / "budgets.json", json.dumps(
                {"machine": machine(), "greedy": greedy, "rows": rows}, indent=2))  # fmt: skip
    greedy["s_per_ktok"] = 1000 * greedy["seconds_per_problem"] / g_tokens
    head = (f"greedy: {greedy['accuracy']:.1%}, {g_tokens:.0f} tokens, "
            f"{greedy['s_per_ktok']:.2f} s / 1k tokens; machine: {machine()}\n\n")  # fmt: skip
    write_atomic(args.out / "budgets.md", head + table(rows))
    plot(rows, greedy, args.out / "budgets.png")
    print(head + table(rows))


if __name__ == "__main__":
    main()
