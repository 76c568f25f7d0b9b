"""path_texts: a path's text stored once, paths reference it by id

Every round stored every path's text again (the LLM's unchanged candidates, an SLM's unchanged
paths; issue 17). Texts move to ``path_texts`` (an integer id, the sha256 of the UTF-8 bytes,
unique, to find a text, and the text), and ``paths.text`` becomes ``paths.text_id``. Existing rows
are moved in pages, hashed in Python (SQLite has no sha256 function), so both SQLite and PostgreSQL
take the same steps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:10:00

"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 5000
_FK = "fk_paths_text_id_path_texts"


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    if not insp.has_table("path_texts"):
        op.create_table(
            "path_texts",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
            sa.Column("text", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("sha256"),
        )
    if "text" not in {c["name"] for c in insp.get_columns("paths")}:
        return  # made by create_all from these models (``migrations.upgrade`` stamps it 0001)
    with op.batch_alter_table("paths") as batch:
        batch.add_column(sa.Column("text_id", sa.Integer(), nullable=True))
    texts = sa.table("path_texts", sa.column("id", sa.Integer), sa.column("sha256", sa.LargeBinary),
                     sa.column("text", sa.Text))
    paths = sa.table("paths", sa.column("id", sa.Integer), sa.column("text", sa.Text),
                     sa.column("text_id", sa.Integer))
    ids: dict[bytes, int] = {}
    last = 0
    while True:
        page = bind.execute(sa.select(paths.c.id, paths.c.text).where(paths.c.id > last)
                            .order_by(paths.c.id).limit(_PAGE)).all()
        if not page:
            break
        keys = [(i, hashlib.sha256(t.encode("utf-8")).digest(), t) for i, t in page]
        new = {k: t for _, k, t in keys if k not in ids}
        if new:
            bind.execute(texts.insert(), [{"sha256": k, "text": t} for k, t in new.items()])
            ks = list(new)
            for j in range(0, len(ks), 500):
                ids.update((bytes(k), tid) for k, tid in bind.execute(
                    sa.select(texts.c.sha256, texts.c.id).where(texts.c.sha256.in_(ks[j:j + 500]))))
        bind.execute(paths.update().where(paths.c.id == sa.bindparam("b_id")).values(text_id=sa.bindparam("b_t")),
                     [{"b_id": i, "b_t": ids[k]} for i, k, _ in keys])
        last = page[-1][0]
    with op.batch_alter_table("paths") as batch:
        batch.alter_column("text_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("text")
        batch.create_foreign_key(_FK, "path_texts", ["text_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("paths") as batch:
        batch.add_column(sa.Column("text", sa.Text(), nullable=True))
    op.execute("UPDATE paths SET text = (SELECT path_texts.text FROM path_texts WHERE path_texts.id = paths.text_id)")
    with op.batch_alter_table("paths") as batch:
        batch.alter_column("text", existing_type=sa.Text(), nullable=False)
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_column("text_id")
    op.drop_table("path_texts")
