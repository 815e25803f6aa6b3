"""The in-tree plugin registry: plugin name -> class."""

from __future__ import annotations

from pocketkube.scheduler.framework import Plugin
from pocketkube.scheduler.plugins.balanced_allocation import NodeResourcesBalancedAllocation
from pocketkube.scheduler.plugins.defaultbinder import DefaultBinder
from pocketkube.scheduler.plugins.defaultpreemption import DefaultPreemption
from pocketkube.scheduler.plugins.imagelocality import ImageLocality
from pocketkube.scheduler.plugins.interpodaffinity import InterPodAffinity
from pocketkube.scheduler.plugins.nodeaffinity import NodeAffinity
from pocketkube.scheduler.plugins.nodename import NodeName
from pocketkube.scheduler.plugins.nodeports import NodePorts
from pocketkube.scheduler.plugins.noderesources_fit import NodeResourcesFit
from pocketkube.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from pocketkube.scheduler.plugins.podtopologyspread import PodTopologySpread
from pocketkube.scheduler.plugins.queuesort import PrioritySort
from pocketkube.scheduler.plugins.schedulinggates import SchedulingGates
from pocketkube.scheduler.plugins.tainttoleration import TaintToleration
from pocketkube.scheduler.plugins.volumebinding import VolumeBinding
from pocketkube.scheduler.plugins.volumerestrictions import VolumeRestrictions

IN_TREE_PLUGINS: tuple[type[Plugin], ...] = (
    SchedulingGates, PrioritySort, NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
    NodeResourcesFit, VolumeRestrictions, VolumeBinding, PodTopologySpread, InterPodAffinity, DefaultPreemption,
    NodeResourcesBalancedAllocation, ImageLocality, DefaultBinder,
)
REGISTRY: dict[str, type[Plugin]] = {cls.name: cls for cls in IN_TREE_PLUGINS}
