"""`latent-search compare`: several methods on one task, each an eval run, at matched budgets.

Each method is a (model, search) pair run through ``eval.runner.run_eval`` into its own
subdirectory, so an interrupted comparison resumes problem by problem. With a token budget B,
every search is capped at B model tokens per problem and sized to reach it (best-of-n draws
B / greedy-tokens samples), so methods are compared at equal cost. The table and the plot report
what each method actually spent, not what it was allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cola_models.errors import ColaError
from latent_search.search import SearchSpec

from .runner import EvalConfig, run_eval


@dataclass(frozen=True)
class Method:
    name: str
    model: str
    search: SearchSpec = field(default_factory=SearchSpec)
    value_model: str | None = None
    level: str = "latent"
    """"latent" or "token": which action space the search moves in (plot marker)."""


def _best_of(n: int, s: dict, scorer: str, label: str, *, token: bool = False) -> Method:
    """Best-of-n of the latent policy (``tiny-arith``), or of its base LM's tokens."""
    spec = SearchSpec(**s, algorithm="best-of-n", n=n, scorer=scorer)
    if token:
        return Method(f"token best-of-{n} ({label})", "tiny-arith-base", spec, level="token")
    return Method(f"best-of-{n} ({label})", "tiny-arith", spec)


BUNDLED = "tiny-arith"
_RELATIVES = ("tiny-arith-bc", "tiny-arith-token-rl", "tiny-arith-base")
"""The bundled model's own baselines: before latent RL, token RL, and its base LM."""


def greedy_method(model: str = BUNDLED) -> Method:
    """The run whose tokens per problem size every budget (``--budget-x``)."""
    return Method("greedy (latent RL)" if model == BUNDLED else "greedy", model, SearchSpec())


def methods_for(
    model: str, budget: int | None, greedy_tokens: float | None, *, has_q: bool = True
) -> list[Method]:
    """``default_methods`` for ``model``: the bundled model keeps every row; another CoLA model
    keeps its own greedy, sampling and searches (its Q-judged rows only when it has a Q head),
    and the rows of the bundled model's relatives (BC, token RL, the base LM's tokens) go."""
    rows = default_methods(budget, greedy_tokens)
    if model == BUNDLED:
        return rows
    out = []
    for m in rows:
        if m.model in _RELATIVES or m.value_model is not None:
            continue
        if not has_q and m.search.scorer == "q" and m.search.algorithm not in ("greedy", "sample"):
            continue
        if m.search.algorithm == "mcts-q" and not has_q:
            continue
        name = m.name.replace(" (latent RL)", "")
        out.append(Method(name, model, m.search, m.value_model, m.level))
    return out


def model_has_q(model: str) -> bool:
    """Whether a CoLA model (a bundled name or a checkpoint directory) has a Q head, read from
    its config.json; a name that is no CoLA model is refused in one line."""
    from cola_models.catalog import checkpoint_kind, resolve_name
    from cola_models.checkpoint import read_json

    path = resolve_name(model)
    if path is None or checkpoint_kind(path) != "cola":
        raise ColaError(f"--model {model!r} is not a CoLA model (a bundled name or a directory)")
    return bool(read_json(path / "config.json")["cola"].get("q_head"))


def default_methods(budget: int | None, greedy_tokens: float | None) -> list[Method]:
    """The comparison docs/evaluation.md reports: CoLA before/after latent RL, token-level RL, and every
    search over latent actions and over tokens. Search sizes are large and the budget binds."""
    big = 64 if budget else 16
    n = max(2, int(budget // greedy_tokens)) if budget and greedy_tokens else 8
    s = dict(budget=budget)  # greedy and sample take none: one decode has no size to bound
    # The rows named plainly ("beam", "mcts", "mcts-q", the token searches) are the searches as
    # the reference runs them: first-token steps valued by the Q head, 4 wide.
    q = dict(scorer="q", beam_width=4, expand_k=4, candidates="first-token")
    return [
        Method("greedy (BC)", "tiny-arith-bc", SearchSpec()),
        Method("sample (BC)", "tiny-arith-bc", SearchSpec(algorithm="sample")),
        Method("greedy (latent RL)", "tiny-arith", SearchSpec()),
        Method("sample (latent RL)", "tiny-arith", SearchSpec(algorithm="sample")),
        Method("greedy (token RL)", "tiny-arith-token-rl", SearchSpec(), level="token"),
        _best_of(n, s, "q", "Q"),
        _best_of(n, s, "vote", "vote"),
        _best_of(n, s, "likelihood", "likelihood"),
        _best_of(n, s, "likelihood", "likelihood", token=True),
        _best_of(n, s, "equations", "equations"),
        _best_of(n, s, "equations", "equations", token=True),
        Method(
            "beam, sampled steps (equations)",
            "tiny-arith",
            SearchSpec(
                **s,
                algorithm="beam",
                candidates="sampled",
                scorer="equations",
                beam_width=8,
                expand_k=8,
            ),
        ),
        Method(
            "beam, per token (equations)",
            "tiny-arith",
            SearchSpec(
                **s,
                algorithm="beam",
                candidates="token",
                scorer="equations",
                beam_width=8,
                expand_k=64,
            ),
        ),
        Method(
            "mcts, per token (equations)",
            "tiny-arith",
            SearchSpec(**s, algorithm="mcts", scorer="equations", rounds=4096 if budget else 64),
        ),
        Method(
            "mcts-q, per token (equations)",
            "tiny-arith",
            SearchSpec(
                **s,
                algorithm="mcts-q",
                scorer="equations",
                candidates="token",
                rounds=4096 if budget else 16,
            ),
        ),
        Method("beam", "tiny-arith", SearchSpec(**s, **q, algorithm="beam", max_new_tokens=256)),
        Method("mcts", "tiny-arith", SearchSpec(**s, **q, algorithm="mcts", rounds=big)),
        Method("mcts-q", "tiny-arith", SearchSpec(**s, algorithm="mcts-q", rounds=big, scorer="q")),
        Method(
            "token beam",
            "tiny-arith-base",
            SearchSpec(**s, **q, algorithm="beam"),
            value_model="tiny-arith",
            level="token",
        ),
        Method(
            "token mcts",
            "tiny-arith-base",
            SearchSpec(**s, **q, algorithm="mcts", rounds=big),
            value_model="tiny-arith",
            level="token",
        ),
    ]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def run_compare(
    methods: list[Method],
    *,
    task: str,
    out: str | Path,
    limit: int | None = None,
    data: str | None = None,
    batch_size: int = 32,
    backend: str = "torch",
    device: str = "auto",
    dtype: str = "auto",
    progress=None,
) -> list[dict]:
    """One eval run per method in OUT/<method>. ``progress(method name)`` may return an eval
    progress callback (done, total, correct) for that method's run."""
    from cola_models.atomic import check_writable_dir

    out = check_writable_dir(out)
    rows = []
    for m in methods:
        cfg = EvalConfig(
            task=task,
            model=m.model,
            search=m.search,
            limit=limit,
            data=data,
            batch_size=batch_size,
            value_model=m.value_model,
            backend=backend,
            device=device,
            dtype=dtype,
        )
        summary = run_eval(
            cfg, out / _slug(m.name), progress=progress(m.name) if progress else None
        )
        rows.append({"method": m.name, "level": m.level, "backend": backend, **summary})
    from cola_models.atomic import write_atomic

    write_atomic(out / "compare.json", json.dumps(rows, indent=2))
    write_atomic(out / "compare.md", markdown_table(rows))
    plot(rows, out / "compare.png", title=f"{task}: accuracy vs model tokens per problem")
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| method | actions | accuracy | 95% CI | tokens / problem | s / problem |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['method']} | {r['level']} | {r['accuracy']:.1%} | {lo:.1%}–{hi:.1%} | "
            f"{r['tokens_per_problem']:.0f} | {r['seconds_per_problem']:.3f} |"
        )
    return "\n".join(lines) + "\n"


MARKERS = "osD^vP*Xph"


def _family(method: str) -> str:
    """greedy / sample / best-of / beam / mcts / mcts-q: what colour a method is drawn in."""
    name = method.removeprefix("token ")
    for family in ("greedy", "sample", "best-of", "beam", "mcts-q", "mcts"):
        if name.startswith(family):
            return family
    return name.split()[0] if name else "?"


def styles(rows: list[dict]) -> list[tuple[int, str, bool]]:
    """(colour index, marker, filled) of each row: a colour per family of search, a marker per
    method within it, hollow for token-level methods. No two rows look alike (up to 10 families
    of 10 methods), where 18 colours of one palette did."""
    families: dict[str, int] = {}
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        fam = _family(r["method"])
        index = families.setdefault(fam, len(families))
        k = seen.get(fam, 0)
        seen[fam] = k + 1
        out.append((index, MARKERS[k % len(MARKERS)], r["level"] != "token"))
    return out


def plot(rows: list[dict], path: Path, *, title: str) -> None:
    """Accuracy (with 95% CI) against tokens per problem, log x; latent circles, token squares."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ColaError("the plot needs matplotlib: pip install 'latent-search[plot]'") from err
    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)
    colors = plt.get_cmap("tab10").colors
    for r, (family, marker, filled) in zip(rows, styles(rows)):
        lo, hi = r["ci95"]
        acc = r["accuracy"]
        color = colors[family % len(colors)]
        ax.errorbar(
            r["tokens_per_problem"],
            100 * acc,
            yerr=[[100 * (acc - lo)], [100 * (hi - acc)]],
            fmt=marker,
            markersize=7,
            capsize=3,
            color=color,
            markerfacecolor=color if filled else "white",
            label=f"{r['method']} ({r['level']})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("model tokens per problem (prefill + decode)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
