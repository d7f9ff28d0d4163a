"""``pinkrelay registry check``: the example registry is valid; a broken one names every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pinkrelay import load_registry
from pinkrelay.cli import main

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


# Real landmarks the example registry once named; its sites are invented (issue 5).
REAL_PLACES = (
    "Qissa Khwani", "Chowk Yadgar", "Ghanta Ghar", "Mochi Lara", "Namak Mandi", "Khyber Bazaar",
    "Kohati Gate", "Karkhano", "Deans Trade Centre", "Shafi Market", "University of Peshawar",
    "Islamia College", "Shahi Bagh", "Wazir Bagh", "Jinnah Park", "Bagh-e-Naran", "NADRA",
    "Daewoo", "Civil secretariat", "Cunningham",
)


def test_example_sites_are_invented_and_marked_as_examples() -> None:
    """The demo data must not look like a list of real installations at real, named places."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "invented sites" in text.splitlines()[0] and "public demo values" in text
    named = [place for place in REAL_PLACES if place.lower() in text.lower()]
    assert named == [], f"the example registry names real places: {named}"
    registry = load_registry(EXAMPLE)
    names = [button.site.name for button in registry.values()]
    assert len(set(names)) == 68, "every example site has its own name"


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[str]]:
    """``pinkrelay registry check PATH`` in this process: its exit status and output lines."""
    code = main(["registry", "check", str(path)])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out.splitlines()


SECRET = "s" * 24


def test_toml_registry_with_a_secret_file_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """secret_file is relative to the registry file, not to wherever the relay was started."""
    site = tmp_path / "deploy"
    (site / "secrets").mkdir(parents=True)
    (site / "secrets" / "kp-t-2.secret").write_text("kept-out-of-the-registry-0042\n", encoding="utf-8")
    registry = site / "buttons.toml"
    registry.write_text(
        "# comment lines and blank lines shift the line numbers\n\n"
        "[[button]]\n"
        'id = "kp-t-1"\n'
        f'secret = "{SECRET}"\n'
        'site_name = "Zarsang Bazaar, east gate"\n'
        'site_kind = "market"\n'
        "latitude = 34.0081\n"
        "longitude = 71.5708\n"
        'control_rooms = ["main", "vwps-peshawar"]\n'
        "\n"
        "[[button]]\n"
        'id = "kp-t-2"\n'
        'secret_file = "secrets/kp-t-2.secret"\n'
        'site_name = "Zamung University, main gate"\n'
        'site_kind = "campus"\n'
        'district = "University Town"\n'
        "latitude = 34.0012\n"
        "longitude = 71.4861\n"
        'control_rooms = "main;vwps-peshawar"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert check(capsys, registry) == (0, ["OK: 2 buttons (1 market, 1 campus)"])
    loaded = load_registry(Path("..") / "deploy" / "buttons.toml")
    assert loaded["kp-t-2"].secret == b"kept-out-of-the-registry-0042"
    assert loaded["kp-t-1"].secret == SECRET.encode()
    assert loaded["kp-t-1"].control_rooms == loaded["kp-t-2"].control_rooms == ("main", "vwps-peshawar")
    assert loaded["kp-t-2"].site.district == "University Town"


def test_toml_problems_name_the_line_of_each_table_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "short.secret").write_text("too-short\n", encoding="utf-8")
    registry = tmp_path / "broken.toml"
    tables = [
        # 1: fine
        f'id = "kp-a"\nsecret = "{SECRET}"\nsite_name = "A"\nlatitude = 34.0\nlongitude = 71.5',
        # 2: longitude out of range
        f'id = "kp-b"\nsecret = "{SECRET}"\nsite_name = "B"\nlatitude = 34.0\nlongitude = 181.5',
        # 3: coordinates that are not numbers (a string, a boolean)
        f'id = "kp-c"\nsecret = "{SECRET}"\nsite_name = "C"\nlatitude = "north"\nlongitude = true',
        # 4: a room name that is not one
        f'id = "kp-d"\nsecret = "{SECRET}"\nsite_name = "D"\nlatitude = 34.0\nlongitude = 71.5\n'
        'control_rooms = ["main", "Women Police Station"]',
        # 5: a duplicate of 1 that has another problem too
        f'id = "kp-a"\nsecret = "{SECRET}"\nsite_name = "A again"\nlatitude = -91\nlongitude = 71.5',
        # 6: a secret file that does not exist, 7: one too short
        'id = "kp-f"\nsecret_file = "missing.secret"\nsite_name = "F"\nlatitude = 34.0\nlongitude = 71.5',
        'id = "kp-g"\nsecret_file = "short.secret"\nsite_name = "G"\nlatitude = 34.0\nlongitude = 71.5',
    ]
    text = "# broken on purpose\n" + "".join(f"\n[[button]]\n{table}\n" for table in tables)
    registry.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    header_lines = [number for number, line in enumerate(lines, start=1) if line == "[[button]]"]
    at = {n: f"{registry}:{line} [[button]] #{n}" for n, line in enumerate(header_lines, start=1)}

    code, report = check(capsys, registry)
    assert code == 1
    assert report[0] == f"FAILED: registry {registry} has 8 problem(s):"
    assert report[1:] == [
        f"{at[2]}: field longitude 181.5 outside -180..180",
        f"{at[3]}: field latitude 'north' is not a number",
        f"{at[3]}: field longitude True is not a number",
        f"{at[4]}: field control_rooms ['main', 'Women Police Station']: list room names "
        "(1-64 lower-case letters, digits, '.', '_' or '-') separated by ';', e.g. main;vwps",
        f"{at[5]}: field latitude -91.0 outside -90..90",
        f"{at[5]}: field id 'kp-a' duplicates {at[1]}",
        f"{at[6]}: field secret_file {tmp_path / 'missing.secret'}: No such file or directory",
        f"{at[7]}: secret is 9 bytes; use at least 16",
    ]


def test_csv_problems_name_line_and_field_even_when_a_duplicate_has_other_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "kp-ok.secret").write_text("a-long-enough-secret-in-a-file\n", encoding="utf-8")
    registry = tmp_path / "broken.csv"
    registry.write_text(
        "# line 1 is a comment\n"
        "id,secret,secret_file,site_name,latitude,longitude,control_rooms\n"
        f"kp-1,{SECRET},,First,34.0,71.5,main\n"  # 3
        f"kp-2,{SECRET},,Bad longitude,34.0,-200,main\n"  # 4
        f"kp-3,{SECRET},,Words,34.0N,east,main\n"  # 5
        f"kp-4,{SECRET},,Bad room,34.0,71.5,main;VWPS Peshawar\n"  # 6
        f"kp-1,{SECRET},,Repeat with a bad room,34.0,71.5,Main\n"  # 7
        f"kp-5,{SECRET},,Unquoted, comma,34.0,71.5,main\n"  # 8
        ",,keys/kp-ok.secret,No id,34.0,71.5,main\n"  # 9
        f"kp-3,{SECRET},,Repeat of a broken row,34.0,71.5,main\n"  # 10
        ",,keys/kp-ok.secret,Still no id,34.0,71.5,main\n",  # 11: missing ids are not duplicates
        encoding="utf-8",
    )
    code, report = check(capsys, registry)
    assert code == 1
    at = {line: f"{registry}:{line}" for line in range(1, 12)}
    rooms_help = "list room names (1-64 lower-case letters, digits, '.', '_' or '-') separated by ';', e.g. main;vwps"
    assert report[1:] == [
        f"{at[4]}: field longitude -200.0 outside -180..180",
        f"{at[5]}: field latitude '34.0N' is not a number",
        f"{at[5]}: field longitude 'east' is not a number",
        f"{at[6]}: field control_rooms 'main;VWPS Peshawar': {rooms_help}",
        f"{at[7]}: field control_rooms 'Main': {rooms_help}",
        f"{at[7]}: field id 'kp-1' duplicates {at[3]}",
        f"{at[8]}: 1 value(s) more than the header has columns; put a value that contains a comma in double quotes",
        f"{at[8]}: field latitude ' comma' is not a number",
        f"{at[9]}: field id is missing",
        f"{at[10]}: field id 'kp-3' duplicates {at[5]}",
        f"{at[11]}: field id is missing",
    ]
    assert report[0] == f"FAILED: registry {registry} has {len(report) - 1} problem(s):"


def test_a_registry_that_is_fixed_loads_with_its_secret_file(tmp_path: Path) -> None:
    """The same secret_file reference, once the rows are right, gives the file's secret to the relay."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "kp-ok.secret").write_text("a-long-enough-secret-in-a-file\n", encoding="utf-8")
    registry = tmp_path / "fixed.csv"
    registry.write_text(
        "id,secret_file,site_name,site_kind,latitude,longitude,control_rooms\n"
        'kp-ok,keys/kp-ok.secret,"Gulnar Bazaar, north arcade",market,34.0004,71.5402,main;vwps\n',
        encoding="utf-8",
    )
    button = load_registry(registry)["kp-ok"]
    assert button.secret == b"a-long-enough-secret-in-a-file"
    assert button.site.name == "Gulnar Bazaar, north arcade" and button.control_rooms == ("main", "vwps")
