"""``/activations``: the catalogue of activation families a search may use."""

from __future__ import annotations

from fastapi import APIRouter

from core.errors import NotFound, UnknownActivation
from api.schemas import ActivationPublic, ActivationsPublic, ErrorPublic
from models.activations import families, get_activation

router = APIRouter(prefix="/activations", tags=["activations"])


@router.get("", response_model=ActivationsPublic)
def list_activations() -> ActivationsPublic:
    """Every family: formula, parameters with their ranges, trainable or fixed."""
    data = [ActivationPublic.model_validate(cls.describe()) for cls in families()]
    return ActivationsPublic(data=data, count=len(data))


@router.get("/{name}", response_model=ActivationPublic, responses={404: {"model": ErrorPublic}})
def get_activation_family(name: str) -> ActivationPublic:
    """One family by name (aliases such as swish or pade allowed)."""
    try:
        cls = get_activation(name)
    except UnknownActivation as exc:  # a missing resource in a path is 404, not 422
        raise NotFound(exc.detail) from None
    return ActivationPublic.model_validate(cls.describe())
