"""CAM groups as data (DESIGN §2): names, order and members, validated in one place.

A sweep switches G groups (1 <= G <= 10) on and off in all 2^G combinations;
``combo_id`` is the bitmask over the groups in their configured order (bit 0 =
the first group). The default six groups are written once, in the package's
``conf/groups/default.yaml``; everything else (the sweep, the schema's ``g_<group>``
columns, the analysis, the CLI) reads a :class:`GroupSet`.

This module needs only the standard library and PyYAML (no torch), so the
analysis can use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

MAX_GROUPS = 10
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = {"none"}  # combo 0's method name


class GroupError(ValueError):
    """A group definition that cannot be used; the message is one line."""


@dataclass(frozen=True)
class GroupSet:
    """An ordered set of CAM groups.

    names: the group keys in order (bit i of combo_id switches names[i]).
    members: per group, its member names (built-in names or plug-in paths).
    controls: per group, True when every member is a control (RandomCAM): such a
        group is left out of the pre-specified comparator.
    """

    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    controls: tuple[bool, ...]

    @classmethod
    def from_mapping(
        cls,
        groups: Mapping[str, Iterable[str]],
        is_control: Callable[[str], bool] | None = None,
    ) -> GroupSet:
        """Validate ``{group: [member, ...]}`` (order kept) into a GroupSet.

        is_control(member) says whether a member is a control (default: none is).
        Raises GroupError for 0 or more than 10 groups, a bad or duplicate name,
        an empty group, or a member listed twice.
        """
        if not isinstance(groups, Mapping):
            raise GroupError(f"groups must be a mapping of group name to member list, got {type(groups).__name__}")
        names = tuple(str(name) for name in groups)
        if not 1 <= len(names) <= MAX_GROUPS:
            raise GroupError(
                f"{len(names)} groups given; a sweep needs 1 to {MAX_GROUPS} groups "
                f"(2^G experiments)"
            )
        members: list[tuple[str, ...]] = []
        owner: dict[str, str] = {}
        for name in names:
            if not _NAME.match(name) or name in _RESERVED:
                raise GroupError(
                    f"group name {name!r} is not usable; use lower-case letters, digits and _ "
                    f"starting with a letter (not 'none')"
                )
            listed = groups[name]
            if isinstance(listed, str) or not isinstance(listed, Iterable):
                raise GroupError(f"group {name!r} must be a list of member names, got {listed!r}")
            entries = tuple(str(m).strip() for m in listed)
            if not entries:
                raise GroupError(f"group {name!r} has no members; give at least one CAM method")
            for member in entries:
                if member in owner:
                    where = "twice in it" if owner[member] == name else f"also in group {owner[member]!r}"
                    raise GroupError(f"member {member!r} of group {name!r} is {where}; a member belongs to one group")
                owner[member] = name
            members.append(entries)
        controls = tuple(
            bool(is_control) and all(is_control(m) for m in group)  # type: ignore[misc]
            for group in members
        )
        return cls(names, tuple(members), controls)

    # --- the design --------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def n_combos(self) -> int:
        return 2**self.size

    @property
    def all_on(self) -> int:
        """combo_id with every group on."""
        return self.n_combos - 1

    @property
    def comparator(self) -> int:
        """The pre-specified MetaCAM: every group that is not a control (all groups if all are)."""
        real = sum(1 << i for i, control in enumerate(self.controls) if not control)
        return real or self.all_on

    @property
    def columns(self) -> tuple[str, ...]:
        """The results dataset's flag columns, ``g_<group>`` in group order."""
        return tuple(f"g_{name}" for name in self.names)

    def flags(self, combo_id: int) -> dict[str, bool]:
        """Group on/off flags of ``combo_id`` (bit i switches names[i])."""
        if not 0 <= combo_id < self.n_combos:
            raise GroupError(f"combo_id {combo_id} is outside 0..{self.n_combos - 1}")
        return {name: bool(combo_id >> i & 1) for i, name in enumerate(self.names)}

    def combo_id_of(self, on: Iterable[str]) -> int:
        """The combo_id with exactly the groups ``on`` switched on."""
        chosen = set(on)
        unknown = chosen - set(self.names)
        if unknown:
            raise GroupError(f"unknown group(s) {', '.join(sorted(unknown))}; groups are {', '.join(self.names)}")
        return sum(1 << i for i, name in enumerate(self.names) if name in chosen)

    def combo_name(self, combo_id: int) -> str:
        """The ``method`` value of a MetaCAM row: the on groups joined by ``+`` (``none`` for 0)."""
        on = [name for name, flag in self.flags(combo_id).items() if flag]
        return "+".join(on) if on else "none"

    def members_of(self, combo_id: int) -> list[str]:
        """The members of the groups switched on in ``combo_id``, in group order."""
        return [m for i, group in enumerate(self.members) if combo_id >> i & 1 for m in group]

    def group_of(self, member: str) -> str:
        for name, group in zip(self.names, self.members, strict=True):
            if member in group:
                return name
        raise GroupError(f"member {member!r} is in no group")

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(group) for name, group in zip(self.names, self.members, strict=True)}

    # --- recording it in a dataset ---------------------------------------
    def to_json(self) -> list[dict]:
        """The definition as recorded in the dataset's metadata."""
        return [
            {"name": name, "members": list(group), "control": control}
            for name, group, control in zip(self.names, self.members, self.controls, strict=True)
        ]

    @classmethod
    def from_json(cls, entries: list[dict]) -> GroupSet:
        groups = cls.from_mapping({e["name"]: e["members"] for e in entries})
        return cls(groups.names, groups.members, tuple(bool(e.get("control", False)) for e in entries))

    def text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


@cache
def _default_mapping() -> dict[str, tuple[str, ...]]:
    import yaml

    text = (files("metacam.conf") / "groups" / "default.yaml").read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    return {str(name): tuple(members) for name, members in loaded.items()}


def default_groups() -> dict[str, tuple[str, ...]]:
    """The six default groups of DESIGN §2, read from the package's conf/groups/default.yaml
    (their one definition): ``{group: (member, ...)}`` in order."""
    return dict(_default_mapping())


def __getattr__(name: str) -> object:
    # DEFAULT_GROUPS stays importable (public API) but is read from the YAML on first use.
    if name == "DEFAULT_GROUPS":
        return default_groups()
    raise AttributeError(f"module 'metacam.groups' has no attribute {name!r}")

