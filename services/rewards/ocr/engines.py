"""OCR engines behind one small interface, so the ``ocr`` reward does not care which one runs.

Private to the ``ocr`` reward (its package), so the reward registry never takes it for a reward.

Two engines read text lines out of an image:

- :class:`OnnxOcrEngine` (default): rapidocr 3.x on onnxruntime. The PP-OCRv6 det/rec ONNX models
  ship inside the rapidocr wheel, so it works offline and in the main environment.
- :class:`PaddleOcrEngine`: PaddleOCR, the engine Flow-GRPO used. It downloads its models at
  first use and pins numpy differently from the main stack, so it is meant to run in its own Ray
  ``runtime_env`` (the ``paddle`` extra), never in the main environment.

Both take our images (uint8 RGB ``[H, W, 3]``) and convert them to BGR, the OpenCV order both
engines assume for numpy input. Neither engine is imported until ``load()``; each describes its
models (``description``) without importing anything, for the responses' ``model`` field.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

TextLine = tuple[str, float]  # (recognized text of one line/box, recognition confidence)
DetLimitType = Literal["max", "min"]
ONNX_MODELS = "PP-OCRv6 small det + rec"  # rapidocr's default models (a unit test checks)


class OcrEngine(ABC):
    """Reads text lines from one image; ``load()`` runs once per replica before any ``read()``."""

    @property
    def description(self) -> str:
        """The engine and its models in one line (a custom engine may say more)."""
        return f"{type(self).__name__} (custom OCR engine)"

    @abstractmethod
    def load(self) -> None:
        """Import the backend and build its models."""

    @abstractmethod
    def read(self, image: np.ndarray) -> list[TextLine]:
        """Every text line found in a uint8 RGB image, in reading order; ``[]`` if none."""


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is uint8 RGB ``[H, W, 3]`` and return a contiguous BGR copy.

    rapidocr passes numpy input through unconverted and PaddleOCR reads numpy input as BGR, both
    following OpenCV, so feeding them our RGB arrays directly would swap red and blue.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected a uint8 RGB array of shape [H, W, 3], got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB array, got dtype {image.dtype}")
    return np.ascontiguousarray(image[..., ::-1])


def _version(package: str) -> str:
    """``package`` and its installed version, found without importing it (e.g. a replica's
    runtime_env may hold a package this process lacks)."""
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def _cuda_index(device: str) -> int | None:
    """``None`` for a CPU device, else the CUDA index of ``'cuda'`` / ``'cuda:N'``."""
    if not device.startswith("cuda"):
        return None
    _, _, index = device.partition(":")
    return int(index) if index else 0


class OnnxOcrEngine(OcrEngine):
    """rapidocr 3.x (PP-OCRv6 det + rec, optional angle classifier) on onnxruntime, offline."""

    def __init__(
        self,
        det_limit_type: DetLimitType = "max",
        det_limit_side_len: int = 960,
        use_angle_cls: bool = False,
        num_threads: int = 0,
        device: str = "cpu",
    ):
        self.params: dict[str, Any] = {
            # "max" only shrinks images larger than the limit; rapidocr's default "min"/736
            # upscales every small image, which measured 8x slower and less accurate.
            "Det.limit_type": det_limit_type,
            "Det.limit_side_len": det_limit_side_len,
            "Global.use_cls": use_angle_cls,
            # Return every line; the reward applies its own confidence threshold, the same for
            # both engines.
            "Global.text_score": 0.0,
            # rapidocr warns on every image without text, which is a normal outcome here.
            "Global.log_level": "error",
        }
        if num_threads > 0:
            self.params["EngineConfig.onnxruntime.intra_op_num_threads"] = num_threads
        cuda = _cuda_index(device)
        if cuda is not None:  # needs onnxruntime-gpu; rapidocr falls back to CPU with a warning
            self.params["EngineConfig.onnxruntime.use_cuda"] = True
            self.params["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = cuda
        self._ocr: Any = None

    @property
    def description(self) -> str:
        """E.g. ``PP-OCRv6 small det + rec ONNX (rapidocr 3.10.0 wheel, real weights)``."""
        return f"{ONNX_MODELS} ONNX ({_version('rapidocr')} wheel, real weights)"

    def load(self) -> None:
        """Build the rapidocr pipeline from the models inside its wheel (no download)."""
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise RuntimeError(
                "the 'onnx' OCR engine needs rapidocr>=3.10 and onnxruntime: install the 'ocr' "
                "extra (pip install 'apex-align[ocr]')"
            ) from exc
        self._ocr = RapidOCR(params=self.params)
        # rapidocr builds its onnxruntime sessions lazily on first use; build them now so that a
        # broken install fails at load() and the first scored batch is not slower than the rest.
        for loader in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
            if loader == "_load_cls_model" and not self.params["Global.use_cls"]:
                continue
            if hasattr(self._ocr, loader):
                getattr(self._ocr, loader)()

    def read(self, image: np.ndarray) -> list[TextLine]:
        """Text lines with their confidences; ``[]`` when rapidocr finds no text."""
        if self._ocr is None:
            raise RuntimeError("OnnxOcrEngine.read() called before load()")
        out = self._ocr(rgb_to_bgr(image))
        # With no text rapidocr returns an empty RapidOCROutput (txts None) or, when detection
        # found boxes but recognition read nothing, a detection-only output without txts.
        texts = getattr(out, "txts", None)
        scores = getattr(out, "scores", None)
        if not texts or scores is None:
            return []
        return [(str(t), float(s)) for t, s in zip(texts, scores, strict=True)]


class PaddleOcrEngine(OcrEngine):
    """PaddleOCR 3.x (``predict``), or 2.x (``ocr``) when that is what is installed."""

    def __init__(
        self,
        lang: str = "en",
        det_limit_type: DetLimitType = "max",
        det_limit_side_len: int = 960,
        use_angle_cls: bool = False,
        device: str = "cpu",
    ):
        self.lang = lang
        self.det_limit_type = det_limit_type
        self.det_limit_side_len = det_limit_side_len
        self.use_angle_cls = use_angle_cls
        self.device = device
        self._ocr: Any = None
        self._legacy = False  # True for PaddleOCR 2.x

    @property
    def description(self) -> str:
        """E.g. ``paddleocr 3.0.0 det + rec, lang en (real weights, downloaded at first use)``."""
        return (
            f"{_version('paddleocr')} det + rec, lang {self.lang} "
            "(real weights, downloaded at first use)"
        )

    def load(self) -> None:
        """Import paddleocr and build its pipeline (downloads models on first use)."""
        try:
            import paddleocr
        except ImportError as exc:
            raise RuntimeError(
                "the 'paddle' OCR engine needs paddleocr and paddlepaddle, which are not in the "
                "main environment (they pin numpy differently and download models at first use). "
                "Install the 'paddle' extra in this deployment's Ray runtime_env, e.g. "
                "runtime_env: {pip: ['paddleocr>=3', 'paddlepaddle>=3']}, or use engine: onnx"
            ) from exc
        major = int(str(getattr(paddleocr, "__version__", "3")).split(".")[0] or 3)
        cuda = _cuda_index(self.device)
        if major >= 3:
            self._ocr = paddleocr.PaddleOCR(
                use_doc_orientation_classify=False,
                use_doc_unwarping=False,
                use_textline_orientation=self.use_angle_cls,
                lang=self.lang,
                text_det_limit_type=self.det_limit_type,
                text_det_limit_side_len=self.det_limit_side_len,
                text_rec_score_thresh=0.0,  # the reward applies the threshold
                device="cpu" if cuda is None else f"gpu:{cuda}",
            )
            self._legacy = False
        else:  # the 2.x call Flow-GRPO makes, with our detection limits and no score filter
            self._ocr = paddleocr.PaddleOCR(
                use_angle_cls=self.use_angle_cls,
                lang=self.lang,
                use_gpu=cuda is not None,
                gpu_id=cuda or 0,
                show_log=False,
                det_limit_type=self.det_limit_type,
                det_limit_side_len=self.det_limit_side_len,
                drop_score=0.0,
            )
            self._legacy = True

    def read(self, image: np.ndarray) -> list[TextLine]:
        """Text lines with their confidences; ``[]`` when PaddleOCR finds no text."""
        if self._ocr is None:
            raise RuntimeError("PaddleOcrEngine.read() called before load()")
        bgr = rgb_to_bgr(image)
        if self._legacy:
            return parse_paddle_result(self._ocr.ocr(bgr, cls=self.use_angle_cls))
        return parse_paddle_result(self._ocr.predict(bgr))


def _is_v2_line(item: Any) -> bool:
    """True for one PaddleOCR 2.x line, ``[box, (text, score)]``."""
    return (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[1], (list, tuple))
        and len(item[1]) == 2
        and isinstance(item[1][0], str)
    )


def _parse_v3_page(page: Mapping) -> list[TextLine]:
    """Lines of one PaddleOCR 3.x result (``rec_texts`` / ``rec_scores``, maybe under ``res``)."""
    if "rec_texts" not in page and isinstance(page.get("res"), Mapping):
        page = page["res"]  # the ``result.json`` form: {"res": {...}}
    texts = page.get("rec_texts")
    scores = page.get("rec_scores")
    if texts is None:
        raise ValueError(f"PaddleOCR result has no 'rec_texts' (keys: {list(page)})")
    texts = list(texts)
    scores = [] if scores is None else list(scores)  # may be a numpy array
    if len(scores) != len(texts):
        raise ValueError(f"PaddleOCR result has {len(texts)} rec_texts but {len(scores)} scores")
    return [(str(t), float(s)) for t, s in zip(texts, scores, strict=True)]


def parse_paddle_result(raw: Any) -> list[TextLine]:
    """Flatten a PaddleOCR result into ``(text, confidence)`` lines, in the engine's order.

    Handles both documented structures:

    - 3.x ``predict()``: a list with one result per input image, each a dict (``OCRResult`` is
      a dict subclass) holding parallel lists ``rec_texts`` and ``rec_scores``; the
      ``{"res": {...}}`` JSON form is accepted too.
    - 2.x ``ocr()``: a list with one page per input image, each a list of
      ``[box, (text, score)]`` lines, or ``None`` when the page has no text (``[None]``).
      A single un-nested page is accepted too.

    Anything else raises ``ValueError`` (the reward then scores that image ``None``).
    """
    if raw is None:
        return []
    pages = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(pages, (list, tuple)):
        raise ValueError(f"unrecognized PaddleOCR result of type {type(raw).__name__}")
    lines: list[TextLine] = []
    for page in pages:
        if page is None:
            continue
        if isinstance(page, Mapping):
            lines.extend(_parse_v3_page(page))
        elif _is_v2_line(page):  # ``raw`` was one page, not a list of pages
            lines.append((str(page[1][0]), float(page[1][1])))
        elif isinstance(page, (list, tuple)):
            for line in page:
                if not _is_v2_line(line):
                    raise ValueError(f"unrecognized PaddleOCR 2.x line: {line!r}")
                lines.append((str(line[1][0]), float(line[1][1])))
        else:
            raise ValueError(f"unrecognized PaddleOCR page of type {type(page).__name__}")
    return lines
