"""The layering rule: the learner (core, policies) never imports the host, the simulator, or Kubernetes."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lodestar_vllm"

# The one interface every router implements may be imported by the simulator (the oracle is a policy).
ALLOWED = ("lodestar_vllm.policies.base",)

FORBIDDEN = {
    "core": ("vllm_router", "lodestar_vllm.sim", "lodestar_vllm.integrations", "lodestar_vllm.bench", "kubernetes_asyncio"),
    "policies": ("vllm_router", "lodestar_vllm.sim", "lodestar_vllm.integrations", "lodestar_vllm.bench", "kubernetes_asyncio"),
    "sim": ("vllm_router", "lodestar_vllm.policies", "lodestar_vllm.integrations", "lodestar_vllm.bench"),
    "workloads": ("vllm_router", "lodestar_vllm.policies", "lodestar_vllm.sim", "lodestar_vllm.integrations"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_floor_imports_only_downward(floor: str) -> None:
    offenders = []
    for path in sorted((PKG / floor).rglob("*.py")):
        for name in _imports(path):
            if name in ALLOWED:
                continue
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[floor]):
                offenders.append(f"{path.relative_to(PKG)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_core_does_not_import_torch_at_module_level() -> None:
    offenders = []
    for path in sorted((PKG / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: lazy imports inside functions are the rule
            if isinstance(node, ast.Import | ast.ImportFrom):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if mod and mod.split(".")[0] == "torch":
                    offenders.append(str(path.relative_to(PKG)))
    assert not offenders, offenders
