# ruff: noqa
# fmt: off
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemResult(_message.Message):
    __slots__ = ("score", "error")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    score: float
    error: str
    def __init__(self, score: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class RewardResult(_message.Message):
    __slots__ = ("reward", "results", "error", "model", "version")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    reward: str
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    error: str
    model: str
    version: str
    def __init__(self, reward: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ..., error: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("height", "width", "channels", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("reward", "images", "prompts", "raw_images")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    RAW_IMAGES_FIELD_NUMBER: _ClassVar[int]
    reward: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    raw_images: _containers.RepeatedCompositeFieldContainer[RawImage]
    def __init__(self, reward: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., prompts: _Optional[_Iterable[str]] = ..., raw_images: _Optional[_Iterable[_Union[RawImage, _Mapping]]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("reward", "results", "model", "version")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    reward: str
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    model: str
    version: str
    def __init__(self, reward: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ScoreManyRequest(_message.Message):
    __slots__ = ("rewards", "images", "prompts", "raw_images")
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    RAW_IMAGES_FIELD_NUMBER: _ClassVar[int]
    rewards: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    raw_images: _containers.RepeatedCompositeFieldContainer[RawImage]
    def __init__(self, rewards: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., prompts: _Optional[_Iterable[str]] = ..., raw_images: _Optional[_Iterable[_Union[RawImage, _Mapping]]] = ...) -> None: ...

class ScoreManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RewardResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RewardResult, _Mapping]]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RewardHealth(_message.Message):
    __slots__ = ("reward", "ready", "error")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    reward: str
    ready: bool
    error: str
    def __init__(self, reward: _Optional[str] = ..., ready: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("ready", "rewards")
    READY_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    rewards: _containers.RepeatedCompositeFieldContainer[RewardHealth]
    def __init__(self, ready: _Optional[bool] = ..., rewards: _Optional[_Iterable[_Union[RewardHealth, _Mapping]]] = ...) -> None: ...
