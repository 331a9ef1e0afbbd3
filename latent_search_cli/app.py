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
from typer.core import TyperGroup

from cola_models.errors import ColaError


def _click_exceptions():
    """Click's exception module as typer uses it (typer >= 0.22 vendors its own click)."""
    import importlib

    import typer.core

    click = getattr(typer.core, "_click", None) or importlib.import_module("click")
    return click.exceptions


def _abort_class() -> type[BaseException]:
    """Ctrl-C's exception: click's ``Abort``, which typer >= 0.29 defines in its own module."""
    found = getattr(_click_exceptions(), "Abort", None)
    if found is None:
        import typer.exceptions

        found = typer.exceptions.Abort
    return found


class OneLineGroup(TyperGroup):
    """Usage errors (an unknown command or option, a malformed value) end like every other
    refusal: ``error: <one line>`` on stderr and exit status 2, not a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        exc = _click_exceptions()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except exc.ClickException as err:
            if not standalone_mode:
                raise
            typer.echo(f"error: {err.format_message().strip().splitlines()[0]}", err=True)
            sys.exit(err.exit_code)
        except _abort_class():
            if not standalone_mode:
                raise
            typer.echo("interrupted", err=True)
            sys.exit(130)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    cls=OneLineGroup,
    name="latent-search",
    help="CoLA latent action spaces for language models, and search over them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"latent-search {version('latent-search')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("latent-search (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    pass


def user_errors(fn):
    """Turn the project's own error type (``ColaError``: the user asked for something that
    cannot be done) into ``error: <one line>`` and exit code 2 (set LATENT_SEARCH_DEBUG=1 to see
    the traceback instead). Any other exception is a bug, or a library's, and keeps its
    traceback: a ValueError from deep inside a library must not pass for bad input."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from cola_models.errors import ColaError

        try:
            return fn(*args, **kwargs)
        except ColaError as err:
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
            raise ColaError(f"--dir {d} is not a directory")
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
ScorerOpt = Annotated[
    str | None,
    typer.Option(
        help="Gold-free judge: q (Q head) | verifier (--verifier) | likelihood (the model's own "
        "mean token probability) | equations (no model: the text's equations recomputed, their "
        "numbers found in the question) | equations-likelihood (ties broken by likelihood) | equations-q (ties broken by "
        "the Q head's value) | vote | "
        "weighted-vote | likelihood-vote (best-of-n). Default: equations-likelihood for "
        "best-of-n, equations otherwise (what docs/search.md's measurements support)."
    ),
]
VerifierOpt = Annotated[
    Path | None,
    typer.Option(help="Reward-model directory (train verifier, or any HF sequence classifier)."),
]
# How --verifier is read (docs/search.md, "Published process reward models as judges").
VerifierFormatOpt = Annotated[
    str | None,
    typer.Option(
        help="How --verifier is read: auto (latent_search.json's prm_format, else config.json's "
        "architectures) | outcome (sequence classifier) | token (TRL token-classification PRM) "
        "| qwen (Qwen2.5-Math-PRM) | tag (causal LM with a step tag, Math-Shepherd)."
    ),
]
StepSeparatorOpt = Annotated[
    str | None,
    typer.Option(
        help="token / qwen PRM: the text after each step, read at its last token. Default: "
        "\\n\\n (token), <extra_0> (qwen); \\n and \\t are a newline and a tab."
    ),
]
StepTagOpt = Annotated[
    str | None,
    typer.Option(help="tag PRM: the tag after each step, read at its last token. Default: ' ки'."),
]
GoodTokenOpt = Annotated[
    str | None, typer.Option(help="tag PRM: the token that says a step is right. Default: +.")
]
BadTokenOpt = Annotated[
    str | None, typer.Option(help="tag PRM: the token that says a step is wrong. Default: -.")
]
PrmAggregateOpt = Annotated[
    str | None,
    typer.Option(help="PRM: one score from the step scores: min | last | prod. Default: min."),
]
RoundsOpt = Annotated[int, typer.Option(help="mcts simulations / mcts-q selection rounds.")]
# --num-samples, not --n: torchrun's parser takes any prefix of its own options (--nnodes,
# --nproc-per-node) as that option, so `torchrun ... eval --n 4` never reached us. --n stays as
# an alias for one-process scripts.
NOpt = Annotated[
    int,
    typer.Option(
        "--num-samples", "--n", help="best-of-n samples (diversity: continuations per prefix)."
    ),
]
WidthOpt = Annotated[int | None, typer.Option(help="beam width. Default: 8.")]
ExpandOpt = Annotated[
    int | None,
    typer.Option(
        help="Actions tried per node (beam, mcts). Default: 64 (all) over token candidates, else 4."
    ),
]
GumbelOpt = Annotated[bool, typer.Option(help="mcts: Gumbel root selection.")]
CandidatesOpt = Annotated[
    str | None,
    typer.Option(
        help="beam / mcts child steps: first-token (top actions, completed greedily) | sampled "
        "(the policy's own samples of the whole step) | token (one token: the distinct tokens "
        "of the top --expand-k actions). Default: token."
    ),
]
ParallelOpt = Annotated[
    int, typer.Option(help="mcts: simulations in flight per problem (batched).")
]
CPuctOpt = Annotated[
    float | None, typer.Option("--c-puct", help="mcts: PUCT exploration constant. Default: 1.0.")
]
AggregateOpt = Annotated[
    str | None,
    typer.Option(
        help="mcts: a node's value is the judge's value of it (last) or the lowest along its "
        "path (min: a fault found stays found). Default: min for the equations scorers, last "
        "otherwise."
    ),
]
ValueModelOpt = Annotated[
    str | None, typer.Option(help="CoLA model whose Q head values a token-level search.")
]
BackendOpt = Annotated[str, typer.Option(help="Model backend: torch | vllm.")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto | cpu | cuda | cuda:N. auto: CUDA when torch sees a GPU (under torchrun the "
        "rank's LOCAL_RANK GPU), else the CPU."
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="CPU threads. Default: OMP_NUM_THREADS if set, else the cores other processes are "
        "not busy on (threads that wait for busy cores stall each other)."
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        help="auto | float32 | bfloat16 | float16 (fp32, bf16, fp16). auto: bfloat16 on CUDA, "
        "float32 on the CPU. Training keeps float32 master weights and computes in this dtype."
    ),
]
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


def eval_progress(update):
    """An eval run's progress callback (done, total, correct): accuracy so far and the rate."""
    import time

    t0, first = time.perf_counter(), []

    def progress(done: int, total: int, correct: int) -> None:
        if not first:
            first.append(done)
        new = done - first[0]
        rate = new / max(1e-9, time.perf_counter() - t0)
        acc = f"accuracy {correct / done:.1%}" if done else ""
        update(done, total, f"{acc}  {rate:.2f} problems/s" if new else acc)

    return progress


# The command-line flags that make a SearchSpec, and the spec field each one sets.
SPEC_FLAGS = {
    "search": "algorithm",
    "budget": "budget",
    "scorer": "scorer",
    "max_new_tokens": "max_new_tokens",
    "seed": "seed",
    "rounds": "rounds",
    "n": "n",
    "beam_width": "beam_width",
    "expand_k": "expand_k",
    "gumbel": "gumbel",
    "step_candidates": "candidates",
    "parallel": "parallel",
    "c_puct": "c_puct",
    "aggregate": "aggregate",
}


def search_spec(flags: dict | None = None, **more):
    """The SearchSpec a command's flags ask for (``flags``: the command's arguments, the ones in
    ``SPEC_FLAGS`` read; flags passed by name come on top). Unset flags stay None:
    ``SearchSpec`` owns the defaults, so the CLI and the library search the same way
    (validated: a bad combination is one line)."""
    from latent_search.search import SearchSpec

    given = {k: v for k, v in (flags or {}).items() if k in SPEC_FLAGS} | more
    return SearchSpec(**{SPEC_FLAGS[k]: v for k, v in given.items()})


# The command-line flags that say how --verifier is read, and the option each one sets
# (``cola_models.prm.OPTIONS``).
JUDGE_FLAGS = {
    "verifier_format": "format",
    "step_separator": "step_separator",
    "step_tag": "step_tag",
    "good_token": "good_token",
    "bad_token": "bad_token",
    "prm_aggregate": "aggregate",
}


def judge_options(flags: dict) -> dict:
    """The reward-model options a command's flags set (only those given); a typed ``\\n`` or
    ``\\t`` is a newline or a tab, since a shell passes a separator such as "\\n\\n" as it is."""
    out = {}
    for k, v in flags.items():
        if k in JUDGE_FLAGS and v is not None:
            out[JUDGE_FLAGS[k]] = v.replace("\\n", "\n").replace("\\t", "\t")
    return out


@app.command()
@user_errors
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")],
    model: Annotated[
        str, typer.Option(help="Bundled name, checkpoint directory or preset.")
    ] = "tiny-arith",
    search: Annotated[
        str,
        typer.Option(
            help="greedy | sample | best-of-n | beam | mcts | mcts-q. Default: MCTS over single "
            "tokens (every action tried, 32 simulations, 8 at a time), judged by the equation "
            "check: the best gold-free search measured here (docs/search.md)."
        ),
    ] = "mcts",
    budget: BudgetOpt = None,
    scorer: ScorerOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length cap.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the action sampler.")] = 0,
    rounds: RoundsOpt = 32,
    n: NOpt = 8,
    beam_width: WidthOpt = None,
    expand_k: ExpandOpt = None,
    gumbel: GumbelOpt = False,
    step_candidates: CandidatesOpt = None,
    parallel: ParallelOpt = 8,
    c_puct: CPuctOpt = None,
    aggregate: AggregateOpt = None,
    tree_out: Annotated[
        Path | None, typer.Option(help="Write the search tree (JSON; mcts/mcts-q: every round).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an mcts/mcts-q search from its saved tree.")
    ] = None,
    viz: Annotated[Path | None, typer.Option(help="Also render the tree (e.g. tree.html).")] = None,
    value_model: ValueModelOpt = None,
    verifier: VerifierOpt = None,
    verifier_format: VerifierFormatOpt = None,
    step_separator: StepSeparatorOpt = None,
    step_tag: StepTagOpt = None,
    good_token: GoodTokenOpt = None,
    bad_token: BadTokenOpt = None,
    prm_aggregate: PrmAggregateOpt = None,
    backend: BackendOpt = "torch",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Solve one problem with a model (CoLA: latent actions; plain LM: tokens)."""
    from cola_models.atomic import check_writable_file
    from cola_models.devices import set_cpu_threads

    set_cpu_threads(threads)
    from eval.solve import SolveConfig, solve_question

    from .progress import bar, is_live

    for path, flag in ((tree_out, "--tree-out"), (viz, "--viz")):
        if path is not None:  # before any model work
            check_writable_file(path, flag)
    if viz is not None:
        from latent_search.viz import resolve_format

        resolve_format(viz, None)  # an unknown format is refused before the search, not after
    spec = search_spec(locals())
    cfg = SolveConfig(
        model=model,
        search=spec,
        value_model=value_model,
        backend=backend,
        verifier=str(verifier) if verifier else None,
        judge=judge_options(locals()),
        device=device,
        dtype=dtype,
    )
    spent = [0]
    with bar(f"{search}", budget, live=is_live(as_json), unit="tokens") as update:

        def on_call(method: str, costs: list[int]) -> None:
            spent[0] += sum(costs)
            update(spent[0], info=f"last call: {method}")

        result = solve_question(
            question,
            cfg,
            tree_out=str(tree_out) if tree_out else None,
            resume=str(resume) if resume else None,
            viz=str(viz) if viz else None,
            on_call=on_call,
        )
    for w in result["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    if as_json:
        emit_json(result)
    else:
        answer = result["answer"] if result["answer"] is not None else "(no final answer found)"
        typer.echo(result["text"])
        typer.echo(f"\nanswer: {answer}   ({result['tokens']} tokens, {result['seconds']:.2f}s)")


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
    scorer: ScorerOpt = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Generation length cap (default 256; diversity: 32).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search / sampler.")] = 0,
    rounds: RoundsOpt = 32,
    n: NOpt = 8,
    beam_width: WidthOpt = None,
    expand_k: ExpandOpt = None,
    gumbel: GumbelOpt = False,
    step_candidates: CandidatesOpt = None,
    parallel: ParallelOpt = 8,
    c_puct: CPuctOpt = None,
    aggregate: AggregateOpt = None,
    samples: Annotated[int, typer.Option(help="Searches per problem (maj@k, pass@k).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Problems searched in lockstep.")] = 32,
    value_model: ValueModelOpt = None,
    verifier: VerifierOpt = None,
    verifier_format: VerifierFormatOpt = None,
    step_separator: StepSeparatorOpt = None,
    step_tag: StepTagOpt = None,
    good_token: GoodTokenOpt = None,
    bad_token: BadTokenOpt = None,
    prm_aggregate: PrmAggregateOpt = None,
    backend: BackendOpt = "torch",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    template: TemplateOpt = None,
    strict: StrictOpt = False,
    allow_download: DownloadOpt = False,
    metric: Annotated[
        str, typer.Option(help="accuracy | diversity (semantic diversity of sampling modes).")
    ] = "accuracy",
    embedder: Annotated[str, typer.Option(help="diversity: minilm | ngram.")] = "minilm",
    shard: Annotated[
        str | None, typer.Option(help="Evaluate share I/N of the problems into OUT/shard-I-of-N.")
    ] = None,
    merge_shards: Annotated[
        int | None, typer.Option(help="Join the N finished shards of OUT into its results.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Evaluate a model + search on a problem set: results.jsonl and summary.json in OUT.
    With --metric diversity: --num-samples continuations of each of --limit prefixes per mode."""
    from cola_models.devices import set_cpu_threads
    from eval.runner import EvalConfig, run_eval

    set_cpu_threads(threads)
    if metric == "diversity":
        from cola_models.atomic import check_writable_dir
        from eval.diversity_run import run_diversity

        check_writable_dir(out)  # before any model work
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
            device=device,
            dtype=dtype,
        )
        if as_json:
            emit_json(report)
            return
        typer.echo(f"{'mode':<16}{'similarity':>12}{'diversity':>12}")
        for mode, r in report["modes"].items():
            typer.echo(f"{mode:<16}{r['similarity']:>12.3f}{r['diversity']:>12.3f}")
        return
    if metric != "accuracy":
        raise ColaError(f"unknown metric {metric!r}; choose accuracy or diversity")

    spec = search_spec(locals(), max_new_tokens=max_new_tokens or 256)
    cfg = EvalConfig(
        task=task,
        model=model,
        search=spec,
        limit=limit,
        data=str(data) if data else None,
        samples=samples,
        batch_size=batch_size,
        value_model=value_model,
        verifier=str(verifier) if verifier else None,
        judge=judge_options(locals()),
        backend=backend,
        template=template,
        strict=strict,
        allow_download=allow_download,
        device=device,
        dtype=dtype,
    )

    from eval.runner import merge_shards as merge
    from eval.sharded import parse_shard, run_distributed, torchrun_rank

    from .progress import bar, is_live

    if merge_shards is not None:
        summary = merge(cfg, out, merge_shards)
    elif torchrun_rank() is not None and shard is None:  # torchrun: every rank a share
        rank, _ = torchrun_rank()
        live = is_live(as_json) and rank == 0
        with bar(f"eval {task} {search}", None, live=live, unit="problems") as update:
            summary = run_distributed(cfg, out, progress=eval_progress(update))
        if summary is None:
            return  # rank 0 reports
    else:
        with bar(f"eval {task} {search}", None, live=is_live(as_json), unit="problems") as update:
            summary = run_eval(
                cfg,
                out,
                progress=eval_progress(update),
                shard=parse_shard(shard) if shard else None,
            )
    for w in summary["skipped_data_lines"]:
        typer.echo(f"warning: skipped {w}", err=True)
    for note in summary["notes"]:
        typer.echo(f"note: {note}", err=True)
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
    model: Annotated[
        str,
        typer.Option(
            help="CoLA model whose greedy decoding, sampling and searches are compared. The "
            "bundled tiny-arith also brings its BC, token-RL and base-LM rows."
        ),
    ] = "tiny-arith",
    limit: Annotated[int | None, typer.Option(help="Problems per method.")] = 100,
    data: Annotated[Path | None, typer.Option(help="JSONL file (math500, gsm8k).")] = None,
    budget_x: Annotated[
        float, typer.Option(help="Budget per problem as a multiple of greedy's tokens.")
    ] = 16.0,
    batch_size: Annotated[int, typer.Option(help="Problems searched in lockstep.")] = 32,
    backend: BackendOpt = "torch",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Compare greedy/sampled CoLA (BC, latent RL), token RL and every search at one budget."""
    from cola_models.devices import set_cpu_threads
    from eval.compare import greedy_method, methods_for, model_has_q, run_compare

    set_cpu_threads(threads)

    if budget_x < 1:
        raise ColaError(f"--budget-x {budget_x} must be >= 1")
    from .progress import bar, is_live

    common = dict(
        task=task,
        out=out,
        limit=limit,
        data=str(data) if data else None,
        device=device,
        dtype=dtype,
    )
    with bar("compare", None, live=is_live(as_json), unit="problems") as update:

        def progress(name: str):
            return eval_progress(lambda done, total, info: update(done, total, f"{name}: {info}"))

        has_q = model_has_q(model)  # a model that is not there: one line, nothing run
        (greedy,) = run_compare(
            [greedy_method(model)],
            batch_size=batch_size,
            backend=backend,
            progress=progress,
            **common,
        )
        budget = max(1, round(budget_x * greedy["tokens_per_problem"]))
        rows = run_compare(
            methods_for(model, budget, greedy["tokens_per_problem"], has_q=has_q),
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


train_app = typer.Typer(
    cls=OneLineGroup,
    help="Train one CoLA stage (or the whole pipeline) into OUT; re-running resumes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(train_app, name="train")

STAGE_HELP = {
    "base": "Stage 0 (the tiny default only): a byte-level BPE tokenizer and a small Llama trained "
    "from scratch on generated problems. Takes no --model.",
    "stage1": "Stage 1: IDM + codebook + merge layers learn latent control over a frozen backbone, "
    "then the policy is behaviour-cloned onto the IDM's actions. --model: the backbone (an LM "
    "directory or bundled LM, e.g. tiny-arith-base).",
    "stage2": "Stage 2 (FTA-I): the backbone is fine-tuned on solutions under IDM actions, then the "
    "policy re-cloned. --model: a stage-1 CoLA model.",
    "rl": "Stage 3, latent RL: GRPO on the policy only (the language model stays bit-identical); "
    "tied groups are dropped and refilled. --model: a CoLA model (e.g. tiny-arith-bc).",
    "token-rl": "The token-level baseline: the same GRPO code path on every weight of a plain LM. "
    "--model: a plain LM (e.g. tiny-arith-base).",
    "rft": "Rejection-sampling fine-tuning (expert iteration): sample like latent RL, clone the "
    "latent actions of the correct samples only. --model: a CoLA model.",
    "q": "The Q head on the policy's own samples of training problems; nothing else trains. "
    "Default objective 'process': Q and V regress dense exact step labels, plus a within-problem "
    "Bradley-Terry term; [q] objective = 'td' is the reference's offline double DQN / SARSA. "
    "Held-out within-problem AUC in the run summary. --model: a CoLA model.",
    "verifier": "A verifier of its own weights (a reward model, HF sequence-classification format): "
    "sampled from the final policy on training problems, trained on outcome and exact step labels "
    "with a within-problem pairwise term; held-out within-problem AUC logged. --model: the policy; "
    "[verifier] init (TOML) or the pipeline: the LM it starts from.",
    "pipeline": "Every stage in order (seeded, resumable), then the bundled models in OUT/models and "
    "their held-out accuracy in OUT/report.json.",
}


def _train_command(stage: str):
    def command(
        out: Annotated[
            Path, typer.Option(help="Run directory (resumed if it holds the same run).")
        ],
        preset: Annotated[str, typer.Option(help="Settings preset: tiny | smoke.")] = "tiny",
        config: Annotated[
            Path | None, typer.Option(help="TOML file overriding the preset.")
        ] = None,
        model: Annotated[
            str | None, typer.Option(help="Input model: a directory or a bundled name.")
        ] = None,
        steps: Annotated[
            int | None, typer.Option(help="Override the stage's optimizer steps.")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Data / sampling seed.")] = None,
        device: Annotated[
            str | None,
            typer.Option(help="auto | cpu | cuda | cuda:N (default: the config's, auto)."),
        ] = None,
        dtype: Annotated[
            str | None,
            typer.Option(
                help="Compute dtype: auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | "
                "float16; weights and optimizer state stay float32."
            ),
        ] = None,
        threads: ThreadsOpt = None,
        quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        from cola_models.devices import set_cpu_threads
        from train.cli_entry import run_stage, torchrun_rank

        set_cpu_threads(threads)

        result = run_stage(
            stage,
            preset=preset,
            config=config,
            out=out,
            model=model,
            steps=steps,
            seed=seed,
            quiet=quiet or as_json or not sys.stderr.isatty(),
            device=device,
            dtype=dtype,
        )
        if torchrun_rank() > 0:
            return  # under torchrun rank 0 reports
        if as_json:
            emit_json(result)
        elif stage == "pipeline":
            typer.echo(
                f"done: models in {out / 'models'}, held-out accuracy in {out / 'report.json'}"
            )
        else:
            typer.echo(f"done: {stage} model in {result['model']}")

    command.__doc__ = STAGE_HELP[stage]
    command.__name__ = f"train_{stage.replace('-', '_')}"
    return command


for _stage in STAGE_HELP:
    train_app.command(name=_stage)(user_errors(_train_command(_stage)))


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
    from cola_models.atomic import check_writable_file
    from latent_search.viz import export

    if out is not None:  # a place that cannot be written: one line, before any rendering
        check_writable_file(out, "--out")

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
