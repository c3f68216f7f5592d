"""``/datasets``: upload or register datasets (named, versioned) and inspect them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api import services
from api.deps import PageDep, PrincipalDep, SessionDep, SettingsDep, SlowDep
from api.schemas import (
    BuiltinsPublic,
    DatasetBuiltinCreate,
    DatasetDetail,
    DatasetPublic,
    DatasetsPublic,
    ErrorPublic,
)
from api.uploads import read_upload
from search.datasets import list_builtins
from store import repo

router = APIRouter(prefix="/datasets", tags=["datasets"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "CSV, Parquet or NPZ (X and y arrays)"},
                        "name": {"type": "string", "description": "stored name; default: the "
                                 "file's stem. A name that exists gets a new version"},
                        "label": {"type": "string", "description": "label column (CSV/Parquet) "
                                  "or y array name (NPZ); default: label/target/y/class"},
                        "task": {"type": "string", "enum": ["classification", "regression"],
                                 "description": "default: inferred from the labels"},
                    },
                },
                "encoding": {"file": {"contentType": "text/csv, application/octet-stream"}},
            }
        },
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic} for code in (413, 415, 422, 429)
}


@router.post("", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
             responses=_ERRORS)
async def upload_dataset(request: Request, session: SessionDep, settings: SettingsDep,
                         principal: PrincipalDep, slow: SlowDep) -> DatasetPublic:
    """Upload a CSV, Parquet or NPZ file (multipart) as a new dataset or a new version of one."""
    with slow.slot(principal.owner, "POST /datasets"):
        upload = await read_upload(request, max_bytes=settings.limits.max_upload_bytes)
        row = await slow.call(
            services.register_upload, session, data=upload.data, filename=upload.filename,
            name=upload.fields.get("name") or None, label=upload.fields.get("label") or None,
            task=upload.fields.get("task") or None, settings=settings, owner=principal.owner,
        )
        return DatasetPublic.model_validate(row)


@router.post("/builtin", status_code=201, response_model=DatasetPublic,
             responses={**_ERRORS, 429: {"model": ErrorPublic}})
async def register_builtin_dataset(body: DatasetBuiltinCreate, session: SessionDep,
                                   settings: SettingsDep, principal: PrincipalDep,
                                   slow: SlowDep) -> DatasetPublic:
    """Register a built-in dataset (generated with ``options``) under a name."""
    row = await slow.run(principal.owner, "POST /datasets/builtin", services.register_builtin,
                         session, builtin=body.builtin, name=body.name, options=body.options,
                         owner=principal.owner, settings=settings)
    return DatasetPublic.model_validate(row)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    session: SessionDep,
    page: PageDep,
    principal: PrincipalDep,
    name: Annotated[str | None, Query(description="only versions of this name")] = None,
    latest: Annotated[bool, Query(description="only the newest version of each name")] = False,
) -> DatasetsPublic:
    """Stored datasets, by name then newest version first."""
    rows = repo.list_datasets(session, name=name, latest_only=latest, owner=principal.scope,
                              limit=page.limit, offset=page.offset)
    count = repo.count_datasets(session, name=name, latest_only=latest, owner=principal.scope)
    return DatasetsPublic(data=[DatasetPublic.model_validate(r) for r in rows], count=count)


@router.get("/builtins", response_model=BuiltinsPublic)
def list_builtin_datasets() -> BuiltinsPublic:
    """The built-in datasets that POST /datasets/builtin and a search's ``dataset`` accept."""
    data = list_builtins()
    return BuiltinsPublic.model_validate({"data": data, "count": len(data)})


@router.get("/{dataset_id}", response_model=DatasetDetail, responses={404: {"model": ErrorPublic}})
def get_dataset(dataset_id: int, session: SessionDep, principal: PrincipalDep) -> DatasetDetail:
    """One dataset version: schema, rows, classes, and every version of its name."""
    row = repo.get_dataset(session, dataset_id=dataset_id, owner=principal.scope)
    detail = DatasetDetail.model_validate(
        {**DatasetPublic.model_validate(row).model_dump(), "schema": row.schema,
         "classes": (row.schema or {}).get("class_names"),
         "versions": services.dataset_versions(session, row=row)},
    )
    return detail
