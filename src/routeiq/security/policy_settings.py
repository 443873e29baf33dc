"""``policies:`` in ``routeiq_settings``: where the Cedar policy file (and schema) live.

.. code-block:: yaml

    routeiq_settings:
      policies: {file: ./policies.cedar, schema: ./schema.cedarschema}

Relative paths resolve against the proxy config's folder. No ``policies:`` section: every
request is allowed (no policy engine runs). With one, Cedar's default applies: a request or
deployment no ``permit`` matches is denied. See :mod:`routeiq.security.policy`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PolicySettings(BaseModel):
    """The Cedar policy file, and the schema it is validated against at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    file: Path = Field(description="Cedar policy file (.cedar)")
    schema_file: Path | None = Field(
        default=None,
        alias="schema",
        description="Cedar schema (.cedarschema, or .json) the policies are validated against; "
        "without one only syntax errors are caught at start-up",
    )

    def resolved(self, base: Path) -> PolicySettings:
        """These settings with relative paths resolved against ``base``."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        return self.model_copy(
            update={"file": fix(self.file), "schema_file": fix(self.schema_file)}
        )
