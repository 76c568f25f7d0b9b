"""Names of the allocation methods, in one place both the config and the registry use.

``common/policies.py`` imports ``FilterConfig`` from ``common/config.py``, so the
config cannot import the registry to type ``run.method``; both import this
dependency-free module instead (a unit test keeps it equal to ``POLICIES``).
"""

from __future__ import annotations

from typing import Literal, get_args

PolicyName = Literal["lada", "random", "lowest_nll", "highest_nll", "fedmkt", "all_public", "local_only"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)

# the methods whose filters learn from the receivers' rewards: only they need a reward beyond the
# NLL drop the round measures anyway (filter.reward=aligned costs a backward pass per pair)
LEARNS_FROM_REWARDS: frozenset[str] = frozenset({"lada"})
