"""Named clusters (embedded YAML) and adaptation scenarios for the benchmark.

A cluster argument is a preset name or a path to a cluster YAML file (``lodestar_vllm.sim.cluster_spec``).
Adaptation presets add fleet events placed at a FRACTION of the run (the run length depends on the workload),
resolved to seconds once the workload is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from lodestar_vllm.sim.cluster import ScenarioEvent
from lodestar_vllm.sim.cluster_spec import ClusterSpec

_H100 = "{gpu: H100, count: %d, max_num_batched_tokens: 8192, max_num_seqs: 1024}"

CLUSTER_YAML: dict[str, str] = {
    # The Lodestar paper's clusters (Llama-3-8B).
    "paper-homogeneous": """
model: llama-3-8b
instances:
  - {gpu: A30, count: 8}
""",
    "paper-heterogeneous": """
model: llama-3-8b
instances:
  - {gpu: A30, count: 4}
  - {gpu: V100, count: 4}
""",
    # Three GPU generations, vLLM's per-GPU default batch budgets (8192/1024 on H100).
    "mixed-fleet": f"""
model: llama-3.1-8b
instances:
  - {_H100 % 2}
  - {{gpu: A100-40GB, count: 2}}
  - {{gpu: L4, count: 4}}
""",
    "large": f"""
model: llama-3.1-8b
instances:
  - {_H100 % 8}
  - {{gpu: A100-80GB, count: 8}}
  - {{gpu: A100-40GB, count: 8}}
  - {{gpu: L4, count: 8}}
""",
    # Small enough for tests and quick checks.
    "tiny": """
model: llama-3.1-8b
instances:
  - {gpu: A100-40GB, count: 1}
  - {gpu: L4, count: 1}
""",
}


@dataclass(frozen=True, slots=True)
class FleetChange:
    """A scenario event at ``at_fraction`` of the workload span, applied to ``select`` (see ``select_names``);
    ``add`` adds one engine like the first selected instance."""

    at_fraction: float
    action: str
    select: str
    factor: float = 1.0


# Adaptation presets: a base cluster plus fleet changes.
ADAPTATION: dict[str, tuple[str, tuple[FleetChange, ...]]] = {
    # Half the fleet (the four A30s: the faster half) becomes 2x slower at mid-run (thermal throttling, a noisy
    # neighbour): a router must notice from outcomes and shift load.
    "paper-heterogeneous-slowdown": ("paper-heterogeneous", (FleetChange(0.5, "slowdown", "first-half", 2.0),)),
    "mixed-fleet-slowdown": ("mixed-fleet", (FleetChange(0.5, "slowdown", "first-half", 2.0),)),
    # One instance leaves at a third of the run (scale-in, node drain).
    "mixed-fleet-scale-in": ("mixed-fleet", (FleetChange(1 / 3, "remove", "first"),)),
    # One more H100 joins at a third of the run (scale-out): a router must start using an engine it never saw.
    "mixed-fleet-scale-out": ("mixed-fleet", (FleetChange(1 / 3, "add", "first"),)),
}


@dataclass(frozen=True, slots=True)
class ClusterChoice:
    name: str
    spec: ClusterSpec
    changes: tuple[FleetChange, ...] = ()

    def events(self, span_s: float) -> list[ScenarioEvent]:
        """Scenario events in seconds for a workload whose arrivals span ``span_s``."""
        out = []
        for i, c in enumerate(self.changes):
            names = select_names(self.spec, c.select)
            if c.action == "add":
                # a new engine like the first selected one (same GPU, model, engine options), fresh name
                template = next(inst for inst in self.spec.instances if inst.name == names[0])
                new = replace(template, name=f"{template.gpu.lower()}-added-{i}")
                out.append(ScenarioEvent(at=c.at_fraction * span_s, action="add", new_instance=new))
            else:
                out.append(ScenarioEvent(at=c.at_fraction * span_s, action=c.action, instances=names,
                                         factor=c.factor))
        return out


def cluster_names() -> list[str]:
    return sorted([*CLUSTER_YAML, *ADAPTATION])


def select_names(spec: ClusterSpec, select: str) -> tuple[str, ...]:
    """``first-half``: the first half of the instances in file order; ``first``: the first one; ``gpu:X``: all
    instances of GPU X; otherwise a comma-separated list of instance names."""
    names = [inst.name for inst in spec.instances]
    if select == "first-half":
        return tuple(names[: len(names) // 2])
    if select == "first":
        return tuple(names[:1])
    if select.startswith("gpu:"):
        gpu = select[4:]
        return tuple(inst.name for inst in spec.instances if inst.gpu == gpu)
    chosen = tuple(s.strip() for s in select.split(",") if s.strip())
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"unknown instance(s) {', '.join(unknown)}; cluster has {', '.join(names)}")
    return chosen


def load_cluster(name_or_path: str) -> ClusterChoice:
    """A preset name or a cluster YAML path -> the cluster (and its fleet changes, for adaptation presets)."""
    if name_or_path in ADAPTATION:
        base, changes = ADAPTATION[name_or_path]
        return ClusterChoice(name_or_path, ClusterSpec.from_mapping(yaml.safe_load(CLUSTER_YAML[base])), changes)
    if name_or_path in CLUSTER_YAML:
        return ClusterChoice(name_or_path, ClusterSpec.from_mapping(yaml.safe_load(CLUSTER_YAML[name_or_path])))
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ValueError(f"cluster file not found: {path}")
        return ClusterChoice(path.stem, ClusterSpec.from_yaml(path))
    raise ValueError(f"unknown cluster {name_or_path!r}: give a YAML file or one of {', '.join(cluster_names())}")
