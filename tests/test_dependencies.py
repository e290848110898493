"""The dependency set: setup.cfg's compatible ranges, the lock (constraints.txt) that `make setup` installs, and the
torch version that the Makefile installs first."""

import configparser
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def declared_requirements() -> list[Requirement]:
    """install_requires and every extra of setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def locked_versions() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(match[2])
    return pins


def test_lock_pins_every_requirement_within_its_range():
    pins = locked_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is required by setup.cfg but not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside setup.cfg's range {requirement}"
        )


def test_ranges_stop_below_the_next_major_release():
    """Every range has an upper bound, and it is the next major release after the tested one (`transformers<6` for
    5.x, `tokenizers<1` for 0.x): a new major is tried with `make test-latest` before the range admits it."""
    pins = locked_versions()
    for requirement in declared_requirements():
        if any(spec.operator == "==" for spec in requirement.specifier):
            continue
        upper = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
        next_major = Version(str(pins[canonicalize_name(requirement.name)].major + 1))
        assert upper == [next_major], f"{requirement}: expected an upper bound <{next_major}"


def test_torch_pin_is_the_version_installed_first():
    makefile = (ROOT / "Makefile").read_text()
    torch_version = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.MULTILINE)[1]
    assert locked_versions()["torch"] == Version(torch_version)
    assert "$(BIN)/pip install -q -c $(CONSTRAINTS) -e \".[testing]\"" in makefile


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="checks the venv that `make setup` builds"
)
def test_make_setup_installed_exactly_the_lock():
    pins = locked_versions()
    # The venv's site-packages only: setuptools' vendored copies (under setuptools/_vendor) are not installed packages.
    site_packages = sysconfig.get_paths()["purelib"]
    installed = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version)
        for dist in metadata.distributions(path=[site_packages])
    }
    installed.pop("ctal-hf")
    assert set(installed) == set(pins)
    # The local CPU wheel carries a local label (2.13.0+cpu), which the pin admits.
    assert {name: Version(version.public) for name, version in installed.items()} == pins
