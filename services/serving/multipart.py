"""Score requests as ``multipart/form-data``: image files uploaded the way ``curl -F`` sends them.

For callers holding files on disk, who would otherwise build base64 JSON by hand::

    curl -F image=@cat.png -F prompt='a sign that says "CAT"' URL/v1/rewards/ocr/score
    curl -F image=@a.png -F image=@b.png -F reward=aesthetic -F reward=jpeg_compressibility \
         URL/v1/score

Fields: ``image`` (a file upload, repeated for several images, at least one), ``prompt`` (text,
none or one per image, in the same order) and, on ``/v1/score`` only, ``reward`` (text, repeated
per reward). The form becomes the same proto message a protobuf body would be (images as their
file bytes), so it is checked like a gRPC call afterwards. Unlike base64 JSON, where a file that
is not an image is an error for that image only, an upload is checked here, header only, so a
wrong file (``-F image=@notes.txt``), a missing file or one over the limits is a 4xx naming the
field and the file name before anything is queued for a model.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from google.protobuf.message import Message
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import InvalidInput, PayloadTooLarge, RewardServiceError
from services.images import ImageLimits, check_image_count, open_header

MULTIPART = "multipart/form-data"
IMAGE, PROMPT, REWARD = "image", "prompt", "reward"
HOW = "send each image as a file field, e.g. curl -F image=@cat.png -F prompt='...'"
_TOO_LARGE = ("Too many", "exceeded maximum size")  # Starlette's limits on parts and fields


def _fields(message: type[Message]) -> tuple[str, ...]:
    """The form fields a route accepts: ``reward`` only where the message lists rewards."""
    many = "rewards" in message.DESCRIPTOR.fields_by_name
    return (IMAGE, PROMPT, REWARD) if many else (IMAGE, PROMPT)


async def read_multipart(request: Request, message: type[Message], limits: ImageLimits) -> Message:
    """The uploaded form as ``message`` (a ``reward.v1`` ScoreRequest/ScoreManyRequest)."""
    cap = 2 * limits.max_images + 16  # a little over: check_image_count names the real limit
    try:
        form = await request.form(max_files=cap, max_fields=cap)
    except StarletteHTTPException as exc:  # Starlette's wording of a MultiPartException
        too_large = any(words in str(exc.detail) for words in _TOO_LARGE)
        error = PayloadTooLarge if too_large else InvalidInput
        raise error(f"invalid multipart body: {exc.detail}; {HOW}") from None
    try:
        allowed = _fields(message)
        unknown = sorted({key for key in form if key not in allowed})
        if unknown:
            raise InvalidInput(
                f"unknown multipart field(s) {', '.join(map(repr, unknown))}; "
                f"this route takes {', '.join(map(repr, allowed))}",
                details={"fields": unknown, "accepted": list(allowed)},
            )
        uploads = form.getlist(IMAGE)
        if not uploads:
            raise InvalidInput(f"multipart body has no {IMAGE!r} file field; {HOW}")
        check_image_count(len(uploads), limits)
        fields: dict[str, Any] = {
            "images": [await _image(upload, i, limits) for i, upload in enumerate(uploads)],
            "prompts": [_text(v, PROMPT, i) for i, v in enumerate(form.getlist(PROMPT))],
        }
        if REWARD in allowed:
            fields["rewards"] = [_text(v, REWARD, i) for i, v in enumerate(form.getlist(REWARD))]
        return message(**fields)
    finally:
        await form.close()


async def _image(upload: Any, index: int, limits: ImageLimits) -> bytes:
    """One uploaded file's bytes, after its header passed the image limits."""
    if not isinstance(upload, UploadFile):
        raise InvalidInput(
            f"image {index}: the {IMAGE!r} field is text, not a file upload; {HOW} (with @)"
        )
    data = await upload.read()
    try:
        open_header(data, index, limits).close()
    except RewardServiceError as exc:
        raise type(exc)(f"{exc.message} (file {upload.filename!r})", details=exc.details) from None
    return data


def _text(value: Any, field: str, index: int) -> str:
    """A text field's value; a file sent where text belongs is an error naming the field."""
    if isinstance(value, UploadFile):
        raise InvalidInput(
            f"{field} {index}: the {field!r} field must be text, not a file "
            f"(curl -F {field}=... without @, or --form-string)"
        )
    return value
