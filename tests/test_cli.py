from __future__ import annotations

import subprocess
import sys

import pytest

from sepit.cli import COMMAND_MODULES, build_parser, main


def _leaf_parsers():
    """Every runnable (sub)command parser of `sepit`."""
    out = []

    def walk(parser, path):
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            out.append((path, parser))
        for action in subs:
            for name, p in action.choices.items():
                walk(p, path + [name])

    walk(build_parser(), [])
    return out


def test_every_command_help_ends_with_an_example() -> None:
    leaves = _leaf_parsers()
    assert len(leaves) >= len(COMMAND_MODULES)
    for path, parser in leaves:
        help_text = parser.format_help()
        assert "example" in help_text.lower(), f"`sepit {' '.join(path)} --help` has no worked example"
        assert f"sepit {' '.join(path)}" in (parser.epilog or ""), f"example of {path} does not run that command"


def test_config_error_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("kind: nosuchkind\n")
    assert main(["config", "validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sepit: error: unknown config kind 'nosuchkind' (known kinds:")


def test_console_entry_point_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "sepit.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "sepit" in r.stdout


@pytest.mark.parametrize("argv", [["--version"]])
def test_version(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "sepit" in capsys.readouterr().out
