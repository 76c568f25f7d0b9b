"""runs.reason (why a run failed); public_accuracy rows renamed public_accuracy_before

A failed run keeps the error that ended it on its own row, so its header can say
why without reading the event log. The public-mix accuracy a round records is
measured at the start of the round, before its learning: its metric is now named
for that (``public_accuracy_before``); the LLM's round-0 copy of round 1's value
goes (round 0 is "before any collaboration", and round 1's row already says it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 13:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a database made by create_all before migrations existed is stamped 0001 (``migrations.upgrade``)
    # but may already have the column, if it was made by these models
    if "reason" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}:
        op.add_column("runs", sa.Column("reason", sa.Text(), nullable=True))
    op.execute("DELETE FROM metrics WHERE name = 'public_accuracy' AND round_idx = 0")
    op.execute("UPDATE metrics SET name = 'public_accuracy_before' WHERE name = 'public_accuracy'")


def downgrade() -> None:
    op.execute("UPDATE metrics SET name = 'public_accuracy' WHERE name = 'public_accuracy_before'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("reason")
