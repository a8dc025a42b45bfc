"""Joint choice for a few slots that compete for the same few extents.

Two VDIs whose next extents sit at the same LE index often fit two candidate PEs equally well
one by one; what tells them apart is the pairing as a whole (VDI a on PE x leaves PE y to VDI b,
whose run then goes on). Scoring every slot alone and then every PE alone calls both ambiguous.
Here the slots of one competition component are assigned together: every assignment of distinct
PEs (or none) to the slots is weighed by exp(sum of its log-odds scores), "none" scoring 0, and
each (slot, PE) pair gets its marginal probability. The best assignment is taken where it is
clear; a confidence is the marginal of the chosen pair. Components are small (a handful of
slots, two or three candidates each); bigger ones are left to the one-by-one rule.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

MAX_ASSIGNMENTS = 4096      # enumeration bound for one component (pure Python)


def components(cands: Mapping[Hashable, Sequence[tuple[int, float]]]) -> list[list[Hashable]]:
    """Slots linked by a shared candidate PE, as lists of slot keys (stable order)."""
    parent: dict[Hashable, Hashable] = {k: k for k in cands}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    by_pe: dict[int, Hashable] = {}
    for key, lst in cands.items():
        for pe, _ in lst:
            other = by_pe.setdefault(pe, key)
            ra, rb = find(key), find(other)
            if ra != rb:
                parent[rb] = ra
    groups: dict[Hashable, list[Hashable]] = {}
    for key in cands:
        groups.setdefault(find(key), []).append(key)
    return list(groups.values())


def size_of(keys: Sequence[Hashable], cands: Mapping[Hashable, Sequence[tuple[int, float]]]) -> int:
    n = 1
    for k in keys:
        n *= len(cands[k]) + 1
    return n


def marginals(keys: Sequence[Hashable], cands: Mapping[Hashable, Sequence[tuple[int, float]]]
              ) -> tuple[dict[Hashable, int | None], dict[Hashable, dict[int | None, float]]]:
    """(best assignment, marginal probability of every (slot, PE or None) pair) over the
    assignments of distinct PEs to `keys`. The caller keeps size_of(keys) small."""
    best: dict[Hashable, int | None] = {k: None for k in keys}
    weights: dict[Hashable, dict[int | None, float]] = {k: {} for k in keys}
    # the largest score sum, for a numerically safe exp()
    top = sum(max([0.0] + [v for _, v in cands[k]]) for k in keys)
    state = {"total": 0.0, "best": -math.inf}
    chosen: list[int | None] = [None] * len(keys)

    def visit(i: int, used: frozenset, score: float) -> None:
        if i == len(keys):
            w = math.exp(score - top)
            state["total"] += w
            for k, pe in zip(keys, chosen):
                weights[k][pe] = weights[k].get(pe, 0.0) + w
            if score > state["best"]:
                state["best"] = score
                best.update(zip(keys, chosen))
            return
        chosen[i] = None
        visit(i + 1, used, score)
        for pe, value in cands[keys[i]]:
            if pe in used:
                continue
            chosen[i] = pe
            visit(i + 1, used | {pe}, score + value)
        chosen[i] = None

    visit(0, frozenset(), 0.0)
    total = state["total"] or 1.0
    marg = {k: {pe: w / total for pe, w in weights[k].items()} for k in keys}
    return best, marg
