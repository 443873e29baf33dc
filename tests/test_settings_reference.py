"""``docs/settings.md`` is generated from the settings models and must be up to date."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from typer.testing import CliRunner

from routeiq.cli.main import app
from routeiq.serving.reference import main, render, undocumented
from routeiq.serving.settings import RouteIQSettings

DOC = Path(__file__).parents[1] / "docs" / "settings.md"
REGENERATE = "regenerate it: python -m routeiq.serving.reference --out docs/settings.md"


def test_docs_settings_md_is_up_to_date():
    assert DOC.exists(), f"docs/settings.md is missing; {REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == render(), f"docs/settings.md is stale; {REGENERATE}"


def test_every_setting_has_a_description():
    assert undocumented() == [], "add description=... to these fields, then " + REGENERATE


def test_every_field_of_every_nested_model_is_listed():
    text = render()
    for name, info in RouteIQSettings.model_fields.items():
        assert f"| `{info.alias or name}` |" in text
    # Nested sections, reached through optional values, lists and mappings.
    for section in ("GroupSettings", "ExperimentSettings", "VariantSettings", "RedisStreamConfig"):
        assert f"\n## {section}\n" in text
    assert "`routeiq_settings.groups.<name>.experiment.variants[]`" in text
    assert "| `lambda` | number \\| null (>= 0) | `null` |" in text  # the alias, not `lam`


def test_rendering_of_a_small_model():
    class Inner(BaseModel):
        """An inner section."""

        n: int = Field(default=3, ge=1, description="a count")

    class Outer(BaseModel):
        """The root."""

        inner: Inner = Field(default_factory=Inner, description="the inner one")
        names: dict[str, Inner] = Field(default_factory=dict, description="named ones")
        path: Path | None = Field(default=None, description="a path")
        required: str = Field(description="must be set")
        bare: bool = True

    text = render(Outer)
    assert "| `inner` | [Inner](#inner) | (see its section) | the inner one |" in text
    assert "| `names` | mapping string -> [Inner](#inner) | `{}` | named ones |" in text
    assert "| `path` | path \\| null | `null` | a path |" in text
    assert "| `required` | string | required | must be set |" in text
    assert "| `n` | integer (>= 1) | `3` | a count |" in text
    assert "`routeiq_settings.inner`, `routeiq_settings.names.<name>`" in text
    assert undocumented(Outer) == ["Outer.bare"]


def test_the_commands_write_the_same_file(tmp_path, capsys):
    out = tmp_path / "settings.md"
    result = CliRunner().invoke(app, ["settings-reference", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == render()
    assert main([]) == 0
    assert capsys.readouterr().out == render()
