"""Mixed-family populations, raced rungs and analysis off the critical path.

* ``actsearch_populations.families``: one family per candidate slot when a population
  mixes families (``family`` then reads ``"mixed"``); NULL for a one-family population.
* ``actsearch_populations.source_trial_numbers``: per slot, the search trial a mixed
  finalist population re-trains (``source_trial_number`` stays for one-family ones).
* ``actsearch_populations.epochs`` / ``rung``: a raced rung trains fewer epochs than the
  search's ``epochs`` (NULL: the spec's); ``rung`` is its index in the race (NULL: not raced).
* ``actsearch_searches.analysis_state`` / ``analysis_error``: closed-form fits and
  distillation run after the leaderboard is stored (``pending``, ``running``, ``done``,
  ``failed``; NULL for searches finished before this revision).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actsearch_populations") as batch:
        batch.add_column(sa.Column("families", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("source_trial_numbers", sa.JSON(none_as_null=True),
                                   nullable=True))
        batch.add_column(sa.Column("epochs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rung", sa.Integer(), nullable=True))
    with op.batch_alter_table("actsearch_searches") as batch:
        batch.add_column(sa.Column("analysis_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("analysis_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actsearch_searches") as batch:
        batch.drop_column("analysis_error")
        batch.drop_column("analysis_state")
    with op.batch_alter_table("actsearch_populations") as batch:
        batch.drop_column("rung")
        batch.drop_column("epochs")
        batch.drop_column("source_trial_numbers")
        batch.drop_column("families")
