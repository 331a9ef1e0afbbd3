"""The ``latent-search`` command. Parsing only: every command hands a validated config to library
code, imported lazily inside the command so that ``--help`` never loads torch."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="latent-search",
    help="CoLA latent action spaces for language models, and search over them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Errors that mean "the user asked for something that cannot be done": one line, exit 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def user_errors(fn):
    """Turn user-facing errors into ``error: <one line>`` and exit code 2 (set
    LATENT_SEARCH_DEBUG=1 to see the traceback instead)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _USER_ERRORS as err:
            if os.environ.get("LATENT_SEARCH_DEBUG"):
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


@app.command()
@user_errors
def models(
    dirs: Annotated[
        list[Path], typer.Option("--dir", help="Also list checkpoints under DIR.")
    ] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List presets, bundled models and local checkpoints."""
    from cola_models.catalog import list_models

    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"--dir {d} is not a directory")
    rows = list_models(dirs)
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "source", "description")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["source"], r["description"])
    Console().print(table)


# Options shared by solve, eval and compare: what to search with and how hard.
SearchOpt = Annotated[str, typer.Option(help="greedy | sample | best-of-n | beam | mcts | mcts-q")]
BudgetOpt = Annotated[int | None, typer.Option(help="Cap on model tokens per problem.")]
ScorerOpt = Annotated[str, typer.Option(help="Gold-free rollout scorer: q | vote.")]
RoundsOpt = Annotated[int, typer.Option(help="mcts simulations / mcts-q selection rounds.")]
NOpt = Annotated[int, typer.Option("--n", help="best-of-n samples.")]
WidthOpt = Annotated[int, typer.Option(help="beam width.")]
ExpandOpt = Annotated[int, typer.Option(help="Actions tried per node (beam, mcts).")]
GumbelOpt = Annotated[bool, typer.Option(help="mcts: Gumbel root selection.")]
ValueModelOpt = Annotated[
    str | None, typer.Option(help="CoLA model whose Q head values a token-level search.")
]
BackendOpt = Annotated[str, typer.Option(help="Model backend: torch | vllm.")]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        help="Prompt template name (qa | boxed | hashes | cola) or a string with {question}."
    ),
]
StrictOpt = Annotated[bool, typer.Option(help="A malformed data line is fatal, not skipped.")]
DownloadOpt = Annotated[
    bool, typer.Option(help="Let --data name a hub dataset and download it (network).")
]


def search_spec(
    search, budget, scorer, max_new_tokens, seed, rounds, n, beam_width, expand_k, gumbel
):
    from latent_search.search import SearchSpec

    return SearchSpec(
        algorithm=search,
        budget=budget,
        max_new_tokens=max_new_tokens,
        n=n,
        rounds=rounds,
        scorer=scorer,
        seed=seed,
        beam_width=beam_width,
        expand_k=expand_k,
        gumbel=gumbel,
    )


@app.command()
@user_errors
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")],
    model: Annotated[
        str, typer.Option(help="Bundled name, checkpoint directory or preset.")
    ] = "tiny-arith",
    search: SearchOpt = "greedy",
    budget: BudgetOpt = None,
    scorer: ScorerOpt = "q",
    max_new_tokens: Annotated[int, typer.Option(help="Generation length cap.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the action sampler.")] = 0,
    rounds: RoundsOpt = 32,
    n: NOpt = 8,
    beam_width: WidthOpt = 4,
    expand_k: ExpandOpt = 4,
    gumbel: GumbelOpt = False,
    tree_out: Annotated[
        Path | None, typer.Option(help="Write the search tree (JSON; mcts/mcts-q: every round).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an mcts/mcts-q search from its saved tree.")
    ] = None,
    viz: Annotated[Path | None, typer.Option(help="Also render the tree (e.g. tree.html).")] = None,
    value_model: ValueModelOpt = None,
    backend: BackendOpt = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Solve one problem with a model (CoLA: latent actions; plain LM: tokens)."""
    from eval.solve import SolveConfig, solve_question

    spec = search_spec(
        search, budget, scorer, max_new_tokens, seed, rounds, n, beam_width, expand_k, gumbel
    )
    cfg = SolveConfig(model=model, search=spec, value_model=value_model, backend=backend)
    result = solve_question(
        question,
        cfg,
        tree_out=str(tree_out) if tree_out else None,
        resume=str(resume) if resume else None,
        viz=str(viz) if viz else None,
    )
    if as_json:
        emit_json(result)
    else:
        typer.echo(result["text"])
        typer.echo(
            f"\nanswer: {result['answer']}   ({result['tokens']} tokens, {result['seconds']:.2f}s)"
        )


@app.command(name="eval")
@user_errors
def evaluate(
    out: Annotated[Path, typer.Option(help="Run directory (re-running skips finished problems).")],
    task: Annotated[str, typer.Option(help="arith | countdown | math500 | gsm8k")] = "arith",
    model: Annotated[str, typer.Option(help="Bundled name, checkpoint or preset.")] = "tiny-arith",
    data: Annotated[
        Path | None, typer.Option(help="JSONL file of a benchmark task (math500, gsm8k).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N problems.")] = None,
    search: SearchOpt = "greedy",
    budget: BudgetOpt = None,
    scorer: ScorerOpt = "q",
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Generation length cap (default 256; diversity: 32).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search / sampler.")] = 0,
    rounds: RoundsOpt = 32,
    n: NOpt = 8,
    beam_width: WidthOpt = 4,
    expand_k: ExpandOpt = 4,
    gumbel: GumbelOpt = False,
    samples: Annotated[int, typer.Option(help="Searches per problem (maj@k, pass@k).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Problems searched in lockstep.")] = 32,
    value_model: ValueModelOpt = None,
    backend: BackendOpt = "torch",
    template: TemplateOpt = None,
    strict: StrictOpt = False,
    allow_download: DownloadOpt = False,
    metric: Annotated[
        str, typer.Option(help="accuracy | diversity (semantic diversity of sampling modes).")
    ] = "accuracy",
    embedder: Annotated[str, typer.Option(help="diversity: minilm | ngram.")] = "minilm",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Evaluate a model + search on a problem set: results.jsonl and summary.json in OUT.
    With --metric diversity: --n continuations of each of --limit prefixes per sampling mode."""
    from eval.runner import EvalConfig, run_eval

    if metric == "diversity":
        from eval.diversity_run import run_diversity

        report = run_diversity(
            model_name=model,
            task=task,
            out=out,
            limit=limit,
            n=n,
            max_new_tokens=max_new_tokens or 32,
            seed=seed,
            embedder=embedder,
            data=str(data) if data else None,
        )
        if as_json:
            emit_json(report)
            return
        typer.echo(f"{'mode':<16}{'similarity':>12}{'diversity':>12}")
        for mode, r in report["modes"].items():
            typer.echo(f"{mode:<16}{r['similarity']:>12.3f}{r['diversity']:>12.3f}")
        return
    if metric != "accuracy":
        raise ValueError(f"unknown metric {metric!r}; choose accuracy or diversity")

    spec = search_spec(
        search, budget, scorer, max_new_tokens or 256, seed, rounds, n, beam_width, expand_k, gumbel
    )
    cfg = EvalConfig(
        task=task,
        model=model,
        search=spec,
        limit=limit,
        data=str(data) if data else None,
        samples=samples,
        batch_size=batch_size,
        value_model=value_model,
        backend=backend,
        template=template,
        strict=strict,
        allow_download=allow_download,
    )

    def progress(done: int, total: int) -> None:
        if not as_json:
            typer.echo(f"{done}/{total} problems", err=True)

    summary = run_eval(cfg, out, progress=progress)
    for w in summary["skipped_data_lines"]:
        typer.echo(f"warning: skipped {w}", err=True)
    if as_json:
        emit_json(summary)
        return
    lo, hi = summary["ci95"]
    typer.echo(
        f"{summary['task']} {summary['search']}: accuracy {summary['accuracy']:.1%} "
        f"(95% CI {lo:.1%}-{hi:.1%}, n={summary['n']}), "
        f"{summary['tokens_per_problem']:.0f} tokens and {summary['seconds_per_problem']:.2f} s "
        f"per problem; results in {out}"
    )


@app.command()
@user_errors
def compare(
    out: Annotated[Path, typer.Option(help="Directory: one eval run per method + compare.md/png.")],
    task: Annotated[str, typer.Option(help="arith | countdown | math500 | gsm8k")] = "arith",
    limit: Annotated[int | None, typer.Option(help="Problems per method.")] = 100,
    data: Annotated[Path | None, typer.Option(help="JSONL file (math500, gsm8k).")] = None,
    budget_x: Annotated[
        float, typer.Option(help="Budget per problem as a multiple of greedy's tokens.")
    ] = 16.0,
    batch_size: Annotated[int, typer.Option(help="Problems searched in lockstep.")] = 32,
    backend: BackendOpt = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Compare greedy/sampled CoLA (BC, latent RL), token RL and every search at one budget."""
    from eval.compare import Method, default_methods, run_compare

    if budget_x < 1:
        raise ValueError(f"--budget-x {budget_x} must be >= 1")
    common = dict(task=task, out=out, limit=limit, data=str(data) if data else None)
    progress = None if as_json else (lambda name: typer.echo(f"running {name}", err=True))
    (greedy,) = run_compare(
        [Method("greedy (latent RL)", "tiny-arith")],
        batch_size=batch_size,
        backend=backend,
        progress=progress,
        **common,
    )
    budget = max(1, round(budget_x * greedy["tokens_per_problem"]))
    rows = run_compare(
        default_methods(budget, greedy["tokens_per_problem"]),
        batch_size=batch_size,
        backend=backend,
        progress=progress,
        **common,
    )
    if as_json:
        emit_json(rows)
    else:
        typer.echo(f"budget: {budget} model tokens per problem ({budget_x:g}x greedy)")
        typer.echo((out / "compare.md").read_text())


@app.command()
@user_errors
def train(
    stage: Annotated[
        str, typer.Argument(help="base | stage1 | stage2 | rl | token-rl | rft | q | pipeline")
    ],
    out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds the same run).")],
    preset: Annotated[str, typer.Option(help="Settings preset: tiny | smoke.")] = "tiny",
    config: Annotated[Path | None, typer.Option(help="TOML file overriding the preset.")] = None,
    model: Annotated[str | None, typer.Option(help="Input model directory of the stage.")] = None,
    steps: Annotated[int | None, typer.Option(help="Override the stage's optimizer steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Data / sampling seed.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train one CoLA stage (or the whole pipeline) into OUT; re-running resumes."""
    from train.cli_entry import run_stage

    result = run_stage(
        stage,
        preset=preset,
        config=config,
        out=out,
        model=model,
        steps=steps,
        seed=seed,
        quiet=quiet or as_json,
    )
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"done: {json.dumps(result)[:2000]}")


@app.command()
@user_errors
def viz(
    tree: Annotated[Path, typer.Argument(help="A tree JSON written by `solve --tree-out`.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Output file: .html (interactive), .svg / .png, .dot, .graphml."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="html | svg | png | dot | graphml | text (default: from --out)."
        ),
    ] = None,
    max_depth: Annotated[int, typer.Option(help="Depth limit of svg/png/dot/text.")] = 12,
    max_width: Annotated[
        int, typer.Option(help="Children shown per node in svg/png/dot/text.")
    ] = 8,
) -> None:
    """Render a search tree: a self-contained HTML viewer, a graph export, or a terminal view."""
    from latent_search.viz import export

    written = export(tree, out=out, fmt=fmt, max_depth=max_depth, max_width=max_width)
    if written is not None:
        typer.echo(f"wrote {written}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
