"""The metrics a score can be read from (light: the CLI imports it for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: its in-sample and held-out columns, name and direction."""

    in_sample: str
    heldout: str
    name: str
    sign: int  # +1 if higher is better, -1 if lower is

    @property
    def is_road(self) -> bool:
        """ROAD has an in-sample and a held-out version; the AUCs have one."""
        return self.in_sample != self.heldout


METRICS: dict[str, Metric] = {
    "combined": Metric("road_combined", "road_heldout_combined", "ROAD combined", 1),
    "morf": Metric("road_morf", "road_heldout_morf", "ROAD MoRF", -1),
    "lerf": Metric("road_lerf", "road_heldout_lerf", "ROAD LeRF", 1),
    "deletion": Metric("deletion_auc", "deletion_auc", "deletion AUC", -1),
    "insertion": Metric("insertion_auc", "insertion_auc", "insertion AUC", 1),
}
HEADLINE_METRICS: tuple[str, ...] = ("combined", "deletion", "insertion")
"""The metrics the report's answer covers: held-out ROAD combined and the second metric."""
