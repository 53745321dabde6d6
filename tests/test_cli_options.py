"""The options restore/eval/bench/explain share are declared once (cli/options.py) and read the
same in every command's --help."""

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ented_cli.cli import options as opt
from ented_cli.cli.main import main

COMMANDS = ("restore", "eval", "bench", "explain")
SOURCES = [
    Path(opt.__file__).parent / "main.py",
    *(Path(opt.__file__).parents[1] / p / "command.py" for p in ("evaluation", "bench", "explain")),
]
# Same flag, different option: bench's --json takes a FILE, bench's --ref is one photo (no -r).
DIFFERENT_MEANING = {("bench", "--json"), ("bench", "--ref")}


def _shared() -> dict[str, click.Option]:
    """Every option options.py declares, by its long flag."""

    def dummy():
        pass

    decorators = [v for k, v in vars(opt).items() if k.endswith("_option")]
    for decorate in decorators:
        dummy = decorate(dummy)
    return {p.opts[-1]: p for p in dummy.__click_params__}


SHARED = _shared()


def _command(name: str) -> click.Command:
    return main.commands[name]


def _help(name: str) -> str:
    result = CliRunner().invoke(main, [name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return _squeeze(result.output)


def _squeeze(text: str) -> str:
    """Without any whitespace: help wraps lines at spaces and after hyphens."""
    return "".join(text.split())


def _same(a: click.Option, b: click.Option) -> bool:
    keys = ("opts", "secondary_opts", "name", "help", "default", "envvar", "is_flag", "multiple")
    same = all(getattr(a, k) == getattr(b, k) for k in keys)
    return same and type(a.type) is type(b.type) and a.section == b.section


def test_every_shared_option_is_shared_by_two_commands_or_more():
    users = {flag: [c for c in COMMANDS if flag in _flags(_command(c))] for flag in SHARED}
    users["--download"].append("weights verify")
    assert {f: u for f, u in users.items() if len(u) < 2} == {}


def _flags(command: click.Command) -> set[str]:
    return {o for p in command.params for o in p.opts}


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_uses_the_shared_declaration_of_every_shared_flag(name):
    for param in _command(name).params:
        for flag in param.opts:
            if flag in SHARED and (name, flag) not in DIFFERENT_MEANING:
                assert isinstance(param, opt.Option) and _same(param, SHARED[flag]), (name, flag)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_shared_options_in_sections_and_every_default(name):
    command = _command(name)
    text = _help(name)
    assert "Modeloptions:" in text and "Reportingoptions:" in text
    ctx = command.make_context(name, [], resilient_parsing=True)  # ctx.params: the defaults
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        flags, help_text = param.get_help_record(ctx)
        assert _squeeze(help_text) in text, (name, flags)
        if param.opts[-1] in SHARED and (name, param.opts[-1]) not in DIFFERENT_MEANING:
            assert SHARED[param.opts[-1]].help.split("  [")[0] in help_text
        one_sided_flag = param.is_flag and not param.secondary_opts
        if ctx.params[param.name] not in (None, False, ()) and not one_sided_flag:
            assert "[default: " in help_text, (name, flags)


def test_no_command_module_declares_a_shared_option_again():
    declared = re.compile(r"click\.option\(\s*((?:\"[^\"]*\",\s*)+)")
    for source in SOURCES:
        command = {"main.py": "restore"}.get(source.name, source.parent.name)
        command = {"evaluation": "eval"}.get(command, command)
        for match in declared.finditer(source.read_text()):
            flags = set(re.findall(r"\"(-[^\"]*)\"", match.group(1)))
            again = {f for f in flags if f in SHARED and (command, f) not in DIFFERENT_MEANING}
            assert not again, (source.name, again)


def test_no_help_imports_torch():
    code = (
        "import sys; from click.testing import CliRunner; from ented_cli.cli.main import main\n"
        f"for name in {COMMANDS!r}:\n"
        "    assert CliRunner().invoke(main, [name, '--help']).exit_code == 0\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "count"), [("100M", 100_000_000), ("1.5G", 1_500_000_000), ("500k", 500_000)]
)
def test_pixel_counts_read_with_units(text, count):
    assert opt.PixelCount().convert(text, None, None) == count
    assert opt.PixelCount().convert(f"{text}P", None, None) == count


@pytest.mark.parametrize("text", ["-1M", "lots"])
def test_bad_pixel_counts_are_usage_errors(text):
    with pytest.raises(click.BadParameter):
        opt.PixelCount().convert(text, None, None)


def test_top_level_help_lists_every_command_without_cutting_it_short():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    listing = result.output.split("Commands:")[1].split("Exit codes")[0]
    rows = [line for line in listing.splitlines() if line.strip()]
    assert len(rows) == len(main.commands)
    assert not [row for row in rows if row.rstrip().endswith("...")]


def test_match_threshold_and_fidelity_help_say_what_they_mean():
    from ented_cli.faces.identity import MATCH_THRESHOLD

    text = _help("restore")
    assert f"alwayspairs.[default:{MATCH_THRESHOLD:g}]" in text and "calibrated" not in text
    fidelity = _squeeze(SHARED["--fidelity"].help)
    assert "codebook" not in fidelity
    assert "0:leanonthereferenceandthelearnedfaceprior" in fidelity
    assert "1:stayclosesttotheinputphoto" in fidelity
