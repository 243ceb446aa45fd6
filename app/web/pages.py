"""Account and concept pages. Each handler parses the form, calls one service, renders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContainerDep, SessionDep
from app.api.errors import http_status
from app.api.uploads import UploadKind, read_uploads
from app.errors import DomainError, InvalidInput, NotFound
from app.services import users as user_service
from app.services.concept_quality import ConceptQuality, size_warnings
from app.web.common import CsrfChecked, PageUser, flash, render

router = APIRouter(include_in_schema=False)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    return redirect("/concepts" if request.session.get("user_id") else "/login")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/concepts") -> Response:
    return render(request, "login.html", next=next)


def _safe_next(url: str) -> str:
    return url if url.startswith("/") and not url.startswith("//") else "/concepts"


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/concepts",
) -> Response:
    try:
        user = user_service.authenticate(session, username, password)
    except DomainError as exc:
        return render(request, "login.html", 401, error=exc.detail, username=username, next=next)
    request.session.clear()
    request.session["user_id"] = user.id
    return redirect(_safe_next(next))


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> Response:
    request.session.clear()
    return redirect("/login")


@router.get("/register", response_class=HTMLResponse)
def register_form(request: Request) -> Response:
    return render(request, "register.html")


@router.post("/register", response_class=HTMLResponse, dependencies=[CsrfChecked])
def register(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    password2: Annotated[str, Form()] = "",
) -> Response:
    try:
        if password != password2:
            raise InvalidInput("The two passwords differ")
        user = user_service.sign_up(session, username, password, container.settings.auth)
    except DomainError as exc:
        return render(request, "register.html", 400, error=exc.detail, username=username)
    request.session.clear()
    request.session["user_id"] = user.id
    flash(request, f"Welcome, {user.username}! Register your first concept.")
    return redirect("/concepts")


@router.get("/concepts", response_class=HTMLResponse)
def gallery(
    request: Request, user: PageUser, session: SessionDep, container: ContainerDep
) -> Response:
    concepts, count = container.concepts.list(session, user, limit=500)
    return render(request, "concepts/gallery.html", user=user, concepts=concepts, count=count)


@router.get("/concepts/new", response_class=HTMLResponse)
def new_concept_form(request: Request, user: PageUser) -> Response:
    return render(request, "concepts/form.html", user=user, concept=None, form={})


@router.post("/concepts/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def create_concept(
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    category: Annotated[str, Form()] = "",
    use_for_training: Annotated[bool, Form()] = False,
    images: Annotated[list[UploadFile] | None, File(), UploadKind.PHOTOS] = None,
) -> Response:
    files = [f for f in (images or []) if f.filename]
    form = {
        "name": name,
        "description": description,
        "category": category,
        "use_for_training": use_for_training,
    }
    try:
        uploads = await read_uploads(files, container.settings.storage.max_upload_bytes)
        concept = await run_in_threadpool(
            container.concepts.create,
            session,
            user,
            name=name,
            description=description,
            category=category,
            use_for_training=use_for_training,
            uploads=uploads,
        )
    except DomainError as exc:
        return render(
            request,
            "concepts/form.html",
            http_status(exc),
            user=user,
            concept=None,
            form=form,
            error=exc.detail,
        )
    flash(request, f"Registered <{concept.name}> with {len(concept.images)} photo(s).")
    return redirect(f"/concepts/{concept.id}")


@router.get("/concepts/{concept_id}", response_class=HTMLResponse)
def concept_page(
    concept_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    concept = container.concepts.get(session, user, concept_id)
    retrieval = container.models.loaded_retrieval()
    if retrieval is not None:
        quality = retrieval.concept_quality(session, user, concept)
    else:
        # The size checks need no model: shown before CLIP has loaded too.
        quality = ConceptQuality(warnings=size_warnings(concept.images))
    return render(request, "concepts/detail.html", user=user, concept=concept, quality=quality)


@router.get("/concepts/{concept_id}/edit", response_class=HTMLResponse)
def edit_concept_form(
    concept_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    concept = container.concepts.get(session, user, concept_id)
    form = {
        "name": concept.name,
        "description": concept.description,
        "category": concept.category,
        "use_for_training": concept.use_for_training,
    }
    return render(request, "concepts/form.html", user=user, concept=concept, form=form)


@router.post("/concepts/{concept_id}/edit", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def edit_concept(
    concept_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    category: Annotated[str, Form()] = "",
    use_for_training: Annotated[bool, Form()] = False,
    images: Annotated[list[UploadFile] | None, File(), UploadKind.PHOTOS] = None,
) -> Response:
    files = [f for f in (images or []) if f.filename]
    form = {
        "name": name,
        "description": description,
        "category": category,
        "use_for_training": use_for_training,
    }
    try:
        uploads = await read_uploads(files, container.settings.storage.max_upload_bytes)
        # Text and photos commit together or not at all.
        await run_in_threadpool(
            container.concepts.update,
            session,
            user,
            concept_id,
            name=name,
            description=description,
            category=category,
            use_for_training=use_for_training,
            uploads=uploads,
        )
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        concept = await run_in_threadpool(container.concepts.get, session, user, concept_id)
        return render(
            request,
            "concepts/form.html",
            http_status(exc),
            user=user,
            concept=concept,
            form=form,
            error=exc.detail,
        )
    flash(request, "Saved.")
    return redirect(f"/concepts/{concept_id}")


@router.post("/concepts/{concept_id}/delete", dependencies=[CsrfChecked])
def delete_concept(
    concept_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    concept = container.concepts.get(session, user, concept_id)
    container.concepts.delete(session, user, concept_id)
    flash(request, f"Deleted <{concept.name}>.")
    return redirect("/concepts")


@router.post("/concepts/{concept_id}/images/{image_id}/delete", dependencies=[CsrfChecked])
def delete_image(
    concept_id: int,
    image_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    try:
        container.concepts.delete_image(session, user, concept_id, image_id)
        flash(request, "Photo deleted.")
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        flash(request, exc.detail, "error")
    return redirect(f"/concepts/{concept_id}")


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: PageUser, session: SessionDep) -> Response:
    tokens = user_service.list_tokens(session, user)
    new_token = request.session.pop("new_token", None)
    return render(request, "account.html", user=user, tokens=tokens, new_token=new_token)


@router.post("/account/tokens", dependencies=[CsrfChecked])
def create_token(
    request: Request,
    user: PageUser,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    try:
        token, _ = user_service.create_token(session, user, name)
        request.session["new_token"] = token
    except DomainError as exc:
        flash(request, exc.detail, "error")
    return redirect("/account")


@router.post("/account/tokens/{token_id}/revoke", dependencies=[CsrfChecked])
def revoke_token(token_id: int, request: Request, user: PageUser, session: SessionDep) -> Response:
    user_service.revoke_token(session, user, token_id)
    flash(request, "Token revoked.")
    return redirect("/account")
