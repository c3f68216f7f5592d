"""``/admin/keys``: create, list and revoke API keys (admin keys only; others get 403)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import AdminDep, SessionDep
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeysPublic, ErrorPublic
from store import repo

router = APIRouter(prefix="/admin/keys", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {403: {"model": ErrorPublic}}


@router.post("", status_code=201, response_model=ApiKeyCreated,
             responses={**_ERRORS, 422: {"model": ErrorPublic}})
def create_key(body: ApiKeyCreate, session: SessionDep, _: AdminDep) -> ApiKeyCreated:
    """Create a key for an owner; the raw key is in this response only (stored hashed)."""
    row, raw = repo.create_api_key(session, owner=body.owner, admin=body.admin, name=body.name)
    return ApiKeyCreated.model_validate({**ApiKeyPublic.model_validate(row).model_dump(),
                                         "key": raw})


@router.get("", response_model=ApiKeysPublic, responses=_ERRORS)
def list_keys(session: SessionDep, _: AdminDep,
              owner: Annotated[str | None, Query(description="only this owner's keys")] = None
              ) -> ApiKeysPublic:
    """Every key (revoked ones too) without the keys themselves, oldest first."""
    rows = repo.list_api_keys(session, owner=owner)
    return ApiKeysPublic(data=[ApiKeyPublic.model_validate(r) for r in rows], count=len(rows))


@router.delete("/{key_id}", response_model=ApiKeyPublic,
               responses={**_ERRORS, 404: {"model": ErrorPublic}})
def revoke_key(key_id: int, session: SessionDep, _: AdminDep) -> ApiKeyPublic:
    """Revoke a key: requests with it get 401 from now on (its row stays, for the record)."""
    return ApiKeyPublic.model_validate(repo.revoke_api_key(session, key_id=key_id))
