"""``actsearch keys ...``: create, list and revoke API keys.

Locally the keys are written straight into the database (as ``actsearch
schedule`` does), which is how the first admin key of a new service is made;
with ``--server URL --api-key ADMIN_KEY`` they go through ``/admin/keys``. The
raw key is printed once, alone on its line on stdout, so a script can capture
it (``KEY=$(actsearch keys create --owner alice)``); everything else goes to stderr.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from . import common

keys_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="API keys: who may call the service (ACTSEARCH_AUTH__ENABLED).")

_FIELDS = ("id", "owner", "name", "prefix", "admin", "created_at", "last_used_at", "revoked_at")



def _row_dict(row: Any) -> dict[str, Any]:
    """A key row as the API's JSON shape (never the hash, never the key)."""
    out = {c: getattr(row, c) for c in _FIELDS}
    for key in ("created_at", "last_used_at", "revoked_at"):
        out[key] = out[key].isoformat() if out[key] is not None else None
    return out


@keys_app.command("create")
def create(
    owner: Annotated[str, typer.Option(help="whose key: letters, digits and _.@+-")],
    admin: Annotated[bool, typer.Option("--admin", help="may manage keys and see every "
                                                        "owner's data")] = False,
    name: Annotated[str | None, typer.Option(help="a label to tell keys apart")] = None,
) -> None:
    """Create a key and print it (shown once: only its SHA-256 is stored)."""
    client = common.remote["client"]
    if client is not None:
        out = client.create_key(owner=owner, admin=admin, name=name)
        raw = out.pop("key")
    else:
        from store import repo

        _, sessions = common.db()
        with sessions.begin() as session:
            row, raw = repo.create_api_key(session, owner=owner, admin=admin, name=name)
            out = _row_dict(row)
    print(raw, flush=True)
    common.err_console.print(
        f"key {out['id']} for owner {out['owner']!r}{' (admin)' if out['admin'] else ''} created; "
        "store it now, it is not shown again. Send it as 'Authorization: Bearer <key>' or "
        "--api-key / ACTSEARCH_API_KEY", highlight=False)


@keys_app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option(help="only this owner's keys")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the keys as JSON")] = False,
) -> None:
    """List keys (revoked ones too), without the keys themselves."""
    client = common.remote["client"]
    if client is not None:
        rows = client.keys(owner=owner)["data"]
    else:
        from store import repo

        _, sessions = common.db()
        with sessions() as session:
            rows = [_row_dict(r) for r in repo.list_api_keys(session, owner=owner)]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} API key{'s' if len(rows) != 1 else ''}", title_justify="left")
    for col in ("id", "owner", "name", "prefix", "admin", "created", "last used", "revoked"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(str(r["id"]), r["owner"], r["name"] or "-", r["prefix"] + "…",
                      "yes" if r["admin"] else "", _short(r["created_at"]),
                      _short(r["last_used_at"]), _short(r["revoked_at"]))
    common.console.print(table)


def _short(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


@keys_app.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="the key's id (see `keys list`)")]) -> None:
    """Revoke a key: requests that send it get 401 from now on."""
    client = common.remote["client"]
    if client is not None:
        out = client.revoke_key(key_id)
    else:
        from store import repo

        _, sessions = common.db()
        with sessions.begin() as session:
            out = _row_dict(repo.revoke_api_key(session, key_id=key_id))
    common.console.print(f"key {out['id']} of owner {out['owner']!r} revoked at "
                      f"{_short(out['revoked_at'])}", highlight=False)
