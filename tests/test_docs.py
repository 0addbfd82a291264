"""Shell completions and the man page stay true to the code.

- the committed files are exactly what `python scripts/gen_docs.py` generates now (so a changed
  command or option without regenerated docs fails here);
- the man page is well-formed roff (a Python lint always; groff without warnings where
  groff is installed);
- the bash completion, sourced in a real bash with the venv's `dhr` on PATH, completes
  subcommands and options; zsh and fish completion requests are answered by `dhr`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin folder, where `dhr` is installed


def _load_gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_gen_docs()


def _option_names(*path: str) -> set[str]:
    """Every option name of `dhr <path>` as the app defines it right now."""
    for p, cmd, ctx in gen.walk_commands(gen.get_cli()):
        if p[1:] == list(path):
            return {
                name
                for param in cmd.get_params(ctx)
                if param.param_type_name == "option" and not param.hidden
                for name in (*param.opts, *param.secondary_opts)
            }
    raise KeyError(path)


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return gen.generate()


# --- up to date, deterministic, installed ------------------------------------------------------


def test_committed_files_are_up_to_date(generated: dict[str, str]) -> None:
    diffs = gen.stale(generated)
    assert not diffs, (
        "generated docs are stale; run `python scripts/gen_docs.py` and commit:\n"
        + "".join(diffs.values())[:4000]
    )


def test_check_command_passes_and_output_ignores_terminal() -> None:
    # a narrow terminal, no rich, another working directory: byte-identical all the same
    env = {**os.environ, "COLUMNS": "37", "TERM": "dumb", "TYPER_USE_RICH": "0"}
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=BIN,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_generation_is_deterministic_and_portable(generated: dict[str, str]) -> None:
    assert gen.generate() == generated
    for rel, text in generated.items():
        assert str(REPO) not in text and sys.prefix not in text and str(Path.home()) not in text
        assert text.endswith("\n") and not text.endswith("\n\n"), rel


def test_stale_files_are_reported_with_a_diff(tmp_path: Path, generated: dict[str, str]) -> None:
    for rel, text in generated.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert gen.stale(generated, tmp_path) == {}
    man = tmp_path / gen.MAN_FILE
    man.write_text(man.read_text().replace("\\-\\-skip\\-existing", "\\-\\-skip"), encoding="utf-8")
    (tmp_path / gen.COMPLETION_FILES["fish"]).unlink()
    diffs = gen.stale(generated, tmp_path)
    assert set(diffs) == {gen.MAN_FILE, gen.COMPLETION_FILES["fish"]}
    assert "+\\fB\\-\\-skip\\-existing\\fR" in diffs[gen.MAN_FILE]


def test_wheel_installs_man_page_and_completions() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    shared = config["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared == {
        gen.MAN_FILE: "share/man/man1/dhr.1",
        gen.COMPLETION_FILES["bash"]: "share/bash-completion/completions/dhr",
        gen.COMPLETION_FILES["zsh"]: "share/zsh/site-functions/_dhr",
        gen.COMPLETION_FILES["fish"]: "share/fish/vendor_completions.d/dhr.fish",
    }
    typer_pin = [d for d in config["project"]["dependencies"] if d.startswith("typer")]
    assert typer_pin == ["typer>=0.29,<0.30"], "completion scripts depend on typer's minor version"


# --- completions ------------------------------------------------------------------------------


def _dhr_env(**extra: str) -> dict[str, str]:
    assert (BIN / "dhr").exists(), f"`dhr` is not installed in {BIN} (pip install -e .)"
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_completion_files_are_what_dhr_prints(shell: str) -> None:
    r = subprocess.run(
        ["dhr"],
        env=_dhr_env(_DHR_COMPLETE=f"source_{shell}"),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    committed = (REPO / gen.COMPLETION_FILES[shell]).read_text(encoding="utf-8")
    body = committed.split("\n", 1)[1]  # without the "generated" comment
    assert body.strip() == r.stdout.strip()


def test_zsh_completion_works_when_autoloaded_and_when_sourced() -> None:
    text = (REPO / gen.COMPLETION_FILES["zsh"]).read_text(encoding="utf-8")
    assert text.startswith("#compdef dhr\n")  # compinit reads this line from $fpath
    assert "_DHR_COMPLETE=complete_zsh dhr" in text
    assert "loadautofunc" in text and "compdef _dhr_completion dhr" in text


def test_complete_bash_through_the_console_script_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dhr` is dhr_cli.cli:main (standalone_mode=False): completion requests still work."""
    from dhr_cli.cli import main

    monkeypatch.setenv("_DHR_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "dhr models ver")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 0
    assert capsys.readouterr().out.split() == ["verify"]


@pytest.mark.parametrize(
    ("shell", "extra", "expected"),
    [
        ("zsh", {}, '"edit":"Apply semantic edits'),
        ("fish", {"_TYPER_COMPLETE_FISH_ACTION": "get-args"}, "edit\tApply semantic edits"),
    ],
)
def test_zsh_and_fish_requests_are_answered(
    shell: str,
    extra: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dhr_cli.cli import main

    monkeypatch.setenv("_DHR_COMPLETE", f"complete_{shell}")
    monkeypatch.setenv("_TYPER_COMPLETE_ARGS", "dhr ed")
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 0
    assert expected in capsys.readouterr().out


def test_completion_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from dhr_cli.cli import main\n"
        "try:\n    main([])\nexcept SystemExit as e:\n    rc = e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(rc)\n"
    )
    env = _dhr_env(_DHR_COMPLETE="complete_bash", COMP_WORDS="dhr invert --", COMP_CWORD="2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "--skip-existing" in r.stdout.split()


# Drives bash like readline does on TAB: split the line into COMP_WORDS, call the function that
# `complete -p dhr` names (so the script must register itself for `dhr`), print COMPREPLY.
_BASH_DRIVER = r"""
set -u
source "$1"
spec=$(complete -p dhr) || { echo "no completion registered for dhr" >&2; exit 3; }
fn=$(sed -E 's/.* -F ([^ ]+).*/\1/' <<< "$spec")
COMP_LINE="$2"
COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<< "$COMP_LINE"
if [[ "$COMP_LINE" == *" " ]]; then COMP_WORDS+=(""); fi
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
prev=""
if (( COMP_CWORD > 0 )); then prev=${COMP_WORDS[COMP_CWORD-1]}; fi
"$fn" dhr "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"""


def bash_complete(line: str) -> list[str]:
    """What bash offers for `line` + TAB with completions/dhr.bash loaded."""
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to test the bash completion"
    r = subprocess.run(
        [
            bash,
            "--norc",
            "--noprofile",
            "-c",
            _BASH_DRIVER,
            "driver",
            str(REPO / gen.COMPLETION_FILES["bash"]),
            line,
        ],
        env=_dhr_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.split("\n") if w]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dhr ed", ["edit"]),
        ("dhr models ver", ["verify"]),
        ("dhr invert --skip", ["--skip-existing"]),
        ("dhr edit --verb", ["--verbose"]),  # an option `dhr edit` has today
        ("dhr edit --sm", ["--smile"]),
    ],
)
def test_bash_completes(line: str, expected: list[str]) -> None:
    assert bash_complete(line) == expected


@pytest.mark.parametrize("path", [("mask",), ("edit",), ("models", "import")])
def test_bash_offers_exactly_the_options_of_the_command(path: tuple[str, ...]) -> None:
    offered = bash_complete(" ".join(("dhr", *path, "--")))
    assert sorted(offered) == sorted(n for n in _option_names(*path) if n.startswith("--"))


def test_bash_offers_every_subcommand() -> None:
    commands = [p[1] for p, _, _ in gen.walk_commands(gen.get_cli()) if len(p) == 2]
    assert set(bash_complete("dhr ")) >= set(commands)


def _completion_values() -> list[tuple[str, list[str]]]:
    from dhr_cli import hub, packs

    synthetic = packs.pack_settings("synthetic")
    ffhq = packs.pack_settings("ffhq")
    return [
        ("dhr invert --pack ", list(packs.PACK_NAMES)),
        ("dhr mask --pack syn", ["synthetic"]),
        ("dhr invert --method ", ["dhr", "pti", "feature", "encoder"]),
        ("dhr invert -m p", ["pti"]),
        ("dhr invert --detector ", ["retinaface", "mtcnn"]),
        ("dhr --device c", ["cpu", "cuda"]),
        ("dhr models list --device m", ["mps"]),
        ("dhr edit --format w", ["webp"]),
        ("dhr edit --edit sm", ["smile="]),
        ("dhr edit --pack synthetic --sweep ", [f"{n}=" for n in synthetic.directions]),
        (
            "dhr edit --pack ffhq -e ",
            [
                f"{n}="
                for n in [*ffhq.directions, *(ffhq.ganspace.presets if ffhq.ganspace else ())]
            ],
        ),
        ("dhr edit --ganspace b", ["beard"]),
        ("dhr models path stylegan", [n for n in hub.registry() if n.startswith("stylegan")]),
        ("dhr models verify mtcnn-", [n for n in hub.registry() if n.startswith("mtcnn-")]),
        ("dhr models download ff", ["ffhq"]),
        ("dhr models import --name e4e", ["e4e-ffhq"]),
    ]


@pytest.mark.parametrize(("line", "expected"), _completion_values())
def test_bash_completes_values(line: str, expected: list[str]) -> None:
    # values, not only option names: what --pack, --method, --detector, --device, --format,
    # --edit, --sweep, --ganspace and the model commands take
    assert bash_complete(line) == expected


# --- man page ---------------------------------------------------------------------------------

_MACROS = {"TH", "SH", "SS", "PP", "TP", "IP", "RS", "RE", "EX", "EE", "br", "nf", "fi", "B", "I"}
_ESCAPE = re.compile(r"\\(f[BIRP]|-|e|&|\(bu|\[u[0-9A-F]{4,5}\])")
_REQUIRED = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "GLOBAL OPTIONS", "COMMANDS",
             "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"]  # fmt: skip


def lint_roff(text: str) -> list[str]:
    """Problems groff would warn about (or render wrongly) in the man page subset we write."""
    problems: list[str] = []
    lines = text.split("\n")
    assert lines.pop() == "", "no final newline"
    body = [ln for ln in lines if not ln.startswith('.\\"')]
    if not body or not body[0].startswith(".TH "):
        problems.append("the first request is not .TH")
    blocks = {"RS": 0, "EX": 0, "nf": 0}
    closers = {"RE": "RS", "EE": "EX", "fi": "nf"}
    font = "R"  # a font change lasts across lines: it must be back to roman at each request
    for n, line in enumerate(lines, 1):
        where = f"line {n}: {line!r}"
        if line.startswith('.\\"'):
            continue
        if not line.strip():
            problems.append(f"{where}: blank line")
        if line != line.rstrip():
            problems.append(f"{where}: trailing space")
        if not line.isascii():
            problems.append(f"{where}: non-ASCII character")
        if line.startswith("'"):
            problems.append(f"{where}: line starts with a control character")
        literal = blocks["EX"] or blocks["nf"]
        if not line.startswith(".") and not literal and len(line) > 80 and " " in line:
            problems.append(f"{where}: text line longer than 80 bytes")
        if line.startswith("."):
            if font not in "RP":
                problems.append(f"{where}: font \\f{font} still on at a request")
            macro = line[1:].split(" ", 1)[0]
            if macro not in _MACROS:
                problems.append(f"{where}: unknown request .{macro}")
            if macro in blocks:
                blocks[macro] += 1
            if macro in closers:
                blocks[closers[macro]] -= 1
                if blocks[closers[macro]] < 0:
                    problems.append(f"{where}: .{macro} without an opening request")
        # every backslash starts a known escape; fonts end roman on every line
        rest = _ESCAPE.sub("", line[3:] if line.startswith('.\\"') else line)
        if "\\" in rest:
            problems.append(f"{where}: unknown escape")
        fonts = re.findall(r"\\f([BIRP])", line)
        font = fonts[-1] if fonts else font
    problems += [f".{k} not closed" for k, v in blocks.items() if v]
    if font not in "RP":
        problems.append("font not back to roman at the end")
    for i, line in enumerate(lines):
        if line == ".TP" and (
            i + 2 >= len(lines) or lines[i + 1].startswith(".") or lines[i + 2].startswith(".")
        ):
            problems.append(f"line {i + 1}: .TP without a tag and a paragraph")
    sections = [ln[4:].strip('"') for ln in lines if ln.startswith(".SH ")]
    problems += [f"section {s} missing" for s in _REQUIRED if s not in sections]
    return problems


def test_man_page_lints_clean(generated: dict[str, str]) -> None:
    assert lint_roff(generated[gen.MAN_FILE]) == []


def test_lint_catches_what_groff_would(generated: dict[str, str]) -> None:
    good = generated[gen.MAN_FILE]
    assert lint_roff(good.replace(".EE\n", "", 1))  # unclosed example
    assert lint_roff(good.replace(".SH FILES\n", ".SH FILES\n.foo\n"))
    assert lint_roff(good.replace("Show the version", "\\fBShow the version", 1))
    assert lint_roff(good.replace("Show the version", "Show " + "very " * 20 + "the version"))
    assert lint_roff(good.replace("(DHR)", "(DHR) \u2014 x", 1))
    assert lint_roff(good.replace("\\-\\-help", "\\x", 1))


def _groff_warnings(path: Path) -> str | None:
    """groff's warnings for a man page ("" = none); None if groff is not installed."""
    groff = shutil.which("groff")
    if groff is None:
        return None
    r = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-rCHECKSTYLE=3", "-z", str(path)],
        capture_output=True,
        text=True,
    )
    return f"rc {r.returncode}\n{r.stderr}" if r.returncode or r.stderr else ""


def test_man_page_renders_without_warnings() -> None:
    warnings = _groff_warnings(REPO / gen.MAN_FILE)
    if warnings is None:
        pytest.skip("groff is not installed (Debian: groff-base); the Python roff lint still ran")
    assert warnings == ""


def _section(man: str, heading: str) -> str:
    start = man.index(heading + "\n")
    nxt = re.search(r"^\.S[HS] ", man[start + len(heading) :], re.M)
    return man[start : start + len(heading) + (nxt.start() if nxt else len(man))]


def test_man_page_documents_every_command_option_and_code(generated: dict[str, str]) -> None:
    from dhr_cli.errors import EXIT_CODE_HELP

    man = generated[gen.MAN_FILE]
    for path, _cmd, _ctx in gen.walk_commands(gen.get_cli())[1:]:
        section = _section(man, f'.SS "{gen.roff_code(" ".join(path))}"')
        names = _option_names(*path[1:]) - _option_names() - {"-h", "--help"}
        for name in names:
            assert f"\\fB{gen.roff_code(name)}\\fR" in section, f"{name} of {path}"
    for name in _option_names():
        assert f"\\fB{gen.roff_code(name)}\\fR" in man
    exit_status = _section(man, '.SH "EXIT STATUS"')
    for code in EXIT_CODE_HELP:
        assert f".TP\n\\fB{int(code)}\\fR\n" in exit_status
    environment = _section(man, ".SH ENVIRONMENT")
    for var in ("DHR_HOME", "DHR_OFFLINE", "DHR_MIRROR", "NO_COLOR"):
        assert f"\\fB{gen.roff_code(var)}\\fR" in environment
    from dhr_cli import __version__

    # the version and its release date from gen_docs.RELEASES, never the clock
    assert (
        man.split("\n")[1]
        == f'.TH DHR 1 {gen.RELEASES[__version__]} "dhr {__version__}" "User Commands"'
    )


def test_an_undocumented_environment_variable_fails_generation(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text('import os\nX = os.environ.get("DHR_NEW_THING")\n')
    with pytest.raises(SystemExit, match="DHR_NEW_THING"):
        gen.check_environment_documented(tmp_path)
    gen.check_environment_documented()  # the real package is fully documented


_README = """\
# dhr

Intro that is not in the man page.

<!-- man:description -->
dhr keeps **hats** and `--blend-radius` stays literal; a line
.starting with a dot, a backslash \\ and an em dash \u2014 all survive.

.dhr files start this paragraph.
<!-- /man -->

<!-- man:examples -->
```bash
dhr invert me.jpg   # the README's example
.hidden-looking line
```
- a list item with [a link](https://example.org/x-y)
<!-- /man -->

<!-- man:notes -->
| code | meaning |
|---|---|
| `7` | some failed |
<!-- /man -->

<!-- man:exit-status -->
Scripts can rely on these.
<!-- /man -->
"""


def test_readme_man_blocks(tmp_path: Path) -> None:
    man = gen.man_page(gen.get_cli(), _README)
    assert lint_roff(man) == []
    assert "Intro" not in man
    description = _section(man, ".SH DESCRIPTION")
    assert "Edit faces in photos" in description  # from the app, then the README block
    assert "\\fBhats\\fR" in description and "\\fB\\-\\-blend\\-radius\\fR" in description
    assert "a line .starting" in description and "\n\\&.dhr files" in description
    assert "\\e" in description and "\\[u2014]" in description
    examples = _section(man, ".SH EXAMPLES")
    assert "dhr invert me.jpg   # the README" in examples  # replaces the built-in examples
    assert "\\&.hidden\\-looking line" in examples
    assert "portrait.jpg" not in examples
    assert "https://example.org/x\\-y" in examples
    sections = [ln for ln in man.split("\n") if ln.startswith(".SH ")]
    assert sections.index(".SH NOTES") == sections.index(".SH EXAMPLES") - 1
    assert "Scripts can rely on these." in _section(man, '.SH "EXIT STATUS"')
    assert "\\fB130\\fR" in _section(man, '.SH "EXIT STATUS"')  # appended, not replaced
    out = tmp_path / "dhr.1"
    out.write_text(man, encoding="utf-8")
    assert _groff_warnings(out) in ("", None)


def test_readme_block_cannot_replace_name() -> None:
    with pytest.raises(SystemExit, match="NAME"):
        gen.readme_blocks("<!-- man:name -->\nx\n<!-- /man -->")
