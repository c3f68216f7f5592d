"""``GET /me``: who the key in this request belongs to."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PrincipalDep, SettingsDep
from api.schemas import MePublic

router = APIRouter(tags=["auth"])


@router.get("/me", response_model=MePublic)
async def me(principal: PrincipalDep, settings: SettingsDep) -> MePublic:
    """The caller's owner name, whether it is an admin, and whether auth is on."""
    return MePublic(owner=principal.owner, admin=principal.admin,
                    auth_enabled=settings.auth_enabled)
