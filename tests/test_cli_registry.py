"""``pinkrelay registry check``: the example registry is valid; a broken one names every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pinkrelay import load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"


def pinkrelay(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinkrelay", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_example_registry_has_68_buttons_inside_peshawar() -> None:
    registry = load_registry(EXAMPLE)
    assert len(registry) == 68
    ids = list(registry)
    assert ids[0] == "kp-pesh-001" and ids[-1] == "kp-pesh-068"
    for button in registry.values():
        assert 33.95 <= button.site.latitude <= 34.05
        assert 71.45 <= button.site.longitude <= 71.62
        assert len(button.secret) >= 16
        assert button.site.name and button.site.district
    kinds = {button.site.kind for button in registry.values()}
    assert {"market", "shopping_centre", "campus", "hospital", "transport"} <= kinds
    first_line = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# EXAMPLE DATA: invented sites for demonstration, not real installations"


def test_check_example_ok() -> None:
    result = pinkrelay("registry", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 68 buttons (")
    assert "market" in result.stdout and "campus" in result.stdout


def test_check_broken_file_names_every_problem_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text(
        "# a comment line, so data lines are not header + n\n"
        "id,secret,site_name,site_kind,latitude,longitude\n"
        "kp-a,aaaaaaaaaaaaaaaaaaaa,Saddar Bazaar,market,34.0,71.54\n"
        "kp-a,bbbbbbbbbbbbbbbbbbbb,Board Bazaar,market,34.0,71.47\n"
        "\n"
        "kp-b,cccccccccccccccccccc,Hayatabad,market,95.5,71.46\n"
        "kp-c,,University Town,campus,34.0,71.49\n",
        encoding="utf-8",
    )
    result = pinkrelay("registry", "check", str(broken))
    assert result.returncode == 1
    report = result.stdout
    assert f"{broken}:4: field id 'kp-a' duplicates {broken}:3" in report
    assert f"{broken}:6: field latitude 95.5" in report
    assert f"{broken}:7: field secret is missing" in report
    assert "OK:" not in report


@pytest.mark.parametrize("name", ["missing.csv", "."])
def test_check_unreadable_file(tmp_path: Path, name: str) -> None:
    result = pinkrelay("registry", "check", str(tmp_path / name))
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: registry file")
    assert len(result.stdout.strip().splitlines()) == 1
