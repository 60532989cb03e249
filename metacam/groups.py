"""The six default CAM groups of the ablation (DESIGN §2), as data.

``combo_id`` is the bitmask over the groups in this order (bit 0 = ``gradcam``).
"""

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "gradcam": ("gradcam", "hirescam", "gradcam_elementwise"),
    "gradcampp": ("gradcampp", "xgradcam", "layercam"),
    "perturbation": ("scorecam", "ablationcam"),
    "eigen": ("eigencam", "eigengradcam"),
    "fullgrad": ("fullgrad",),
    "random": ("randomcam",),
}

GROUP_KEYS: tuple[str, ...] = tuple(DEFAULT_GROUPS)


def combo_flags(combo_id: int, keys: tuple[str, ...] = GROUP_KEYS) -> dict[str, bool]:
    """Group on/off flags of ``combo_id`` (bit i switches ``keys[i]``)."""
    if not 0 <= combo_id < 2 ** len(keys):
        raise ValueError(f"combo_id {combo_id} is outside 0..{2 ** len(keys) - 1}")
    return {key: bool(combo_id >> i & 1) for i, key in enumerate(keys)}


def combo_id_of(flags: dict[str, bool], keys: tuple[str, ...] = GROUP_KEYS) -> int:
    """Inverse of :func:`combo_flags`."""
    return sum(1 << i for i, key in enumerate(keys) if flags.get(key, False))


def combo_name(combo_id: int, keys: tuple[str, ...] = GROUP_KEYS) -> str:
    """The ``method`` value of a MetaCAM row: the on groups joined by ``+`` (``none`` for 0)."""
    on = [key for key, flag in combo_flags(combo_id, keys).items() if flag]
    return "+".join(on) if on else "none"
