"""The pack's two dependency lists: pyproject.toml (pip, the registry) and requirements.txt (what
ComfyUI-Manager installs into ComfyUI's environment)."""

from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def project_dependencies() -> list[Requirement]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return [Requirement(line) for line in tomllib.load(f)["project"]["dependencies"]]


def requirements_txt() -> list[Requirement]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def test_requirements_txt_is_pyproject_without_torch():
    expected = [str(r) for r in project_dependencies() if r.name != "torch"]
    assert [str(r) for r in requirements_txt()] == expected


def test_torch_is_never_capped():
    # A cap below ComfyUI's torch would make installing the pack downgrade torch and so break the
    # torchvision built for it; requirements.txt leaves torch out altogether.
    torch = [r for r in project_dependencies() if r.name == "torch"]
    assert len(torch) == 1, f"expected one torch requirement in pyproject.toml; found {torch}"
    assert not [s for s in torch[0].specifier if s.operator in ("<", "<=", "==", "~=", "===")], \
        f"expected torch with a lower bound only; found {torch[0]}"
    assert "torch" not in {r.name for r in requirements_txt()}
