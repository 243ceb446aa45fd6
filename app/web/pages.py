"""Account and concept pages. Each handler parses the form, calls one service, renders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import AccountsDep, ClientDep, ContainerDep, SessionDep
from app.api.errors import http_status
from app.api.session_cookie import session_cookie
from app.api.uploads import UploadKind, read_uploads
from app.container import Container
from app.errors import DomainError, InvalidInput, NotFound
from app.models import User
from app.security import token_digest
from app.services import users as user_service
from app.services.concept_quality import ConceptQuality
from app.services.concepts import PhotoFlags
from app.web.common import CsrfChecked, PageUser, flash, render, signed_in_user

router = APIRouter(include_in_schema=False)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep) -> Response:
    """A signed-in user's concepts; anyone else learns what the app does, with a sample."""
    if signed_in_user(request, session) is not None:
        return redirect("/concepts")
    return render(request, "home.html")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/concepts") -> Response:
    return render(request, "login.html", next=next)


def _safe_next(url: str) -> str:
    return url if url.startswith("/") and not url.startswith("//") else "/concepts"


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(
    request: Request,
    session: SessionDep,
    accounts: AccountsDep,
    client: ClientDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/concepts",
) -> Response:
    cookie = session_cookie(request)
    try:
        token = accounts.log_in(session, username, password, client, previous=cookie.token)
    except DomainError as exc:
        page = render(
            request, "login.html", http_status(exc), error=exc.detail, username=username, next=next
        )
        if exc.retry_after_s is not None:
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    # A new id, never the anonymous one the visitor had: no session fixation.
    cookie.issue(token)
    return redirect(_safe_next(next))


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request, session: SessionDep, accounts: AccountsDep) -> Response:
    cookie = session_cookie(request)
    if cookie.token is not None:
        accounts.log_out(session, cookie.token)
    cookie.end()
    return redirect("/login")


@router.get("/register", response_class=HTMLResponse)
def register_form(request: Request) -> Response:
    return render(request, "register.html")


@router.post("/register", response_class=HTMLResponse, dependencies=[CsrfChecked])
def register(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    client: ClientDep,
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
    session_cookie(request).issue(container.browser_sessions.start(session, user, client))
    flash(request, f"Welcome, {user.username}! Register your first concept.")
    return redirect("/concepts")


@router.get("/concepts", response_class=HTMLResponse)
def gallery(
    request: Request, user: PageUser, session: SessionDep, container: ContainerDep
) -> Response:
    concepts, count = container.concepts.list(session, user, limit=500)
    shared = container.shares.shared_with(session, user)
    return render(request, "concepts/gallery.html", user=user, concepts=concepts, count=count,
                  shared=shared)


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
    threshold = None
    paper_retrieval = container.settings.retrieval.mode == "paper"
    if retrieval is not None:
        quality = retrieval.concept_quality(session, user, concept)
        # The paper's retrieval applies no threshold: showing one would say what is not done.
        threshold = None if paper_retrieval else retrieval.threshold(session, user)
    else:
        # The size checks need no model: shown before CLIP has loaded too.
        quality = ConceptQuality.from_sizes(concept.images)
    shares = container.shares.shares_of(session, user, concept_id)
    return render(request, "concepts/detail.html", user=user, concept=concept, quality=quality,
                  threshold=threshold, paper_retrieval=paper_retrieval, shares=shares)


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


def photo_flags(
    photo_ids: Sequence[int], boxes: Sequence[str], eval_only: Sequence[int]
) -> dict[int, PhotoFlags]:
    """The edit form's photo controls (in card order: an id and a box text per photo, the ids
    of the checked "evaluation only" boxes) as flags per image id; an empty box clears it."""
    if len(photo_ids) != len(boxes):
        raise InvalidInput("The photos of the form do not match; reload the page")
    flags: dict[int, PhotoFlags] = {}
    for number, (image_id, text) in enumerate(zip(photo_ids, boxes, strict=True), 1):
        parts = text.replace(",", " ").split()
        if parts and (len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts)):
            raise InvalidInput(f"Photo {number}: Box must be four whole numbers: x1, y1, x2, y2")
        coords = [int(p) for p in parts] if parts else None
        flags[image_id] = PhotoFlags(eval_only=image_id in eval_only, box=coords)
    return flags


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
    photo_id: Annotated[list[int], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    box: Annotated[list[str], Form()] = [],  # noqa: B006
    eval_only: Annotated[list[int], Form()] = [],  # noqa: B006
) -> Response:
    files = [f for f in (images or []) if f.filename]
    form = {
        "name": name,
        "description": description,
        "category": category,
        "use_for_training": use_for_training,
    }
    # What the page showed, kept when it is shown again with an error.
    photo_form = {
        image_id: {"eval_only": image_id in eval_only, "box": text}
        for image_id, text in zip(photo_id, box, strict=False)
    }
    try:
        flags = photo_flags(photo_id, box, eval_only)
        uploads = await read_uploads(files, container.settings.storage.max_upload_bytes)
        # Text, photo flags and new photos commit together or not at all.
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
            photo_flags=flags,
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
            photo_form=photo_form,
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


def _account_page(
    request: Request,
    user: User,
    session: Session,
    container: Container,
    status_code: int = 200,
    **context: Any,
) -> Response:
    tokens = user_service.list_tokens(session, user)
    sessions = container.browser_sessions.live(session, user)
    this_session = session_cookie(request).token
    return render(
        request,
        "account.html",
        status_code,
        user=user,
        tokens=tokens,
        sessions=sessions,
        this_session=token_digest(this_session) if this_session else None,
        **context,
    )


@router.get("/account", response_class=HTMLResponse)
def account(
    request: Request, user: PageUser, session: SessionDep, container: ContainerDep
) -> Response:
    return _account_page(request, user, session, container)


@router.post("/account/tokens", dependencies=[CsrfChecked])
def create_token(
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    try:
        token, _ = user_service.create_token(session, user, name)
    except DomainError as exc:
        flash(request, exc.detail, "error")
        return redirect("/account")
    # Shown in this answer and nowhere else: not in the cookie, not stored, not cached.
    page = _account_page(request, user, session, container, 201, new_token=token)
    page.headers["Cache-Control"] = "no-store"
    return page


@router.post("/account/password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def change_password(
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    accounts: AccountsDep,
    client: ClientDep,
    current_password: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    new_password2: Annotated[str, Form()] = "",
    revoke_tokens: Annotated[bool, Form()] = False,
) -> Response:
    try:
        if new_password != new_password2:
            raise InvalidInput("The two new passwords differ")
        outcome = accounts.change_password(
            session,
            user,
            current_password,
            new_password,
            client,
            revoke_tokens=revoke_tokens,
            in_browser=True,
        )
    except DomainError as exc:
        page = _account_page(
            request, user, session, container, http_status(exc), password_error=exc.detail
        )
        if exc.retry_after_s is not None:
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    assert outcome.new_session is not None
    session_cookie(request).issue(outcome.new_session)
    message = f"Password changed; {outcome.sessions_ended} other session(s) logged out"
    if revoke_tokens:
        message += f", {outcome.tokens_revoked} API token(s) revoked"
    flash(request, message + ".")
    return redirect("/account")


@router.post("/account/training", dependencies=[CsrfChecked])
def set_feedback_training(
    request: Request,
    user: PageUser,
    session: SessionDep,
    allow_feedback_training: Annotated[bool, Form()] = False,
) -> Response:
    user_service.set_feedback_training(session, user, allow_feedback_training)
    flash(request, "Your feedback now trains the model." if allow_feedback_training
          else "Your feedback no longer trains the model.")
    return redirect("/account#training-consent")


@router.post("/account/logout-all", dependencies=[CsrfChecked])
def log_out_everywhere(
    request: Request,
    user: PageUser,
    session: SessionDep,
    accounts: AccountsDep,
    revoke_tokens: Annotated[bool, Form()] = False,
) -> Response:
    accounts.log_out_everywhere(session, user, revoke_tokens=revoke_tokens)
    session_cookie(request).end()
    return redirect("/login")


@router.post("/account/tokens/{token_id}/revoke", dependencies=[CsrfChecked])
def revoke_token(token_id: int, request: Request, user: PageUser, session: SessionDep) -> Response:
    user_service.revoke_token(session, user, token_id)
    flash(request, "Token revoked.")
    return redirect("/account")
