"""A backend wrapper for accounting tests: it adds up every row cost the backend reports."""

from latent_search.backends.watch import Watched


def Counting(inner) -> Watched:  # noqa: N802 - reads as a class at the call sites
    totals = {"prior": 0, "expand": 0, "rollout": 0}

    def count(method, costs):
        totals[method] += sum(costs)

    watched = Watched(inner, count)
    watched.totals = totals
    return watched
