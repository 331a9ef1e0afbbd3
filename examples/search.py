"""Solve two problems with per-token MCTS judged by the equation check (the CLI's `solve`
default), from Python. Runs on CUDA in bf16 when a GPU is present, else on the CPU."""

from eval.searcher import load_searcher
from latent_search import SearchSpec, run_search

spec = SearchSpec("mcts", candidates="token", rounds=32, expand_k=64, scorer="equations")
searcher = load_searcher("tiny-arith", spec)  # the bundled model; device="auto", dtype="auto"
questions = [
    "Tom has 3 apples. Ann gives him 4 more. How many apples does Tom have now?",
    "A box holds 12 pens. Sam takes 5 pens out. How many pens are left in the box?",
]
prompts = searcher.encode(questions, spec.max_new_tokens)
results = run_search(searcher.backend, prompts, spec, **searcher.search_args())
for question, r in zip(questions, results):
    print(f"{question} -> {r.text.strip()}  ({r.tokens_used} tokens)")
