"""The factorial design of a sweep: G groups switched on and off in 2^G experiments.

Groups are data (:class:`metacam.groups.GroupSet`): names, order and members
are read from the dataset, never written here. ``combo_id`` is the bitmask over
the groups in their order (bit i switches ``groups.names[i]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metacam.groups import GroupSet
from metacam.schema import KINDS

FLAG_PREFIX = "g_"
METACAM, SINGLE, CONTROL = KINDS
"""The experiment kinds (``kind`` column): a combination of groups, one CAM method, a null control."""


def flag_matrix(combo_ids: np.ndarray | pd.Index | pd.Series | Sequence[int], n_groups: int) -> np.ndarray:
    """On/off flags of each combo_id: ``(n,) -> (n, n_groups)`` int64 (column i = bit i)."""
    ids = np.asarray(combo_ids, dtype=np.int64)
    return (ids[:, None] >> np.arange(n_groups)[None, :]) & 1


def group_names_from_columns(columns: Sequence[str]) -> tuple[str, ...]:
    """Group names from the ``g_<group>`` columns, in their order in the file."""
    return tuple(c[len(FLAG_PREFIX):] for c in columns if c.startswith(FLAG_PREFIX))


def groups_from_columns(names: Sequence[str], members: dict[str, list[str]] | None = None) -> GroupSet:
    """A GroupSet for a dataset that does not record its groups: names from the flag
    columns, members as far as the single-method rows reveal them, no controls."""
    members = members or {}
    return GroupSet(
        names=tuple(names),
        members=tuple(tuple(members.get(name, ())) for name in names),
        controls=tuple(False for _ in names),
    )
