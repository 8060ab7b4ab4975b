"""JSON shapes of the HTTP API; FastAPI turns them into the OpenAPI document at /openapi.json."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Alternative(BaseModel):
    caption: str
    score: float | None = Field(description="length-normalised log-probability; null if none")


class Attention(BaseModel):
    grid: list[int] = Field(description="[grid_h, grid_w] of the encoder's feature map")
    words: list[str] = Field(description="the word decoded at each step; '<end>' closes it")
    steps: list[list[list[float]]] = Field(description="(steps, grid_h, grid_w) weights")
    mean: list[list[float]] = Field(description="(grid_h, grid_w) mean over the steps")


class CaptionResponse(BaseModel):
    caption: str = Field(description='the caption; "" when nothing was decoded')
    score: float | None = Field(description="length-normalised log-probability; null if none")
    alternatives: list[Alternative] = Field(description="the other finished beams, best first")
    model: str = Field(description="name of the model bundle that captioned")
    timings_ms: dict[str, float] = Field(
        description="queue, decode, caption, search (if any) and total, in milliseconds"
    )
    attention: Attention | None = Field(
        default=None, description="present when return_attention=true"
    )


class Evidence(BaseModel):
    source: str = Field(description='"image" (embedding similarity) or "text" (title read)')
    score: float = Field(description="image: cosine similarity -1..1; text: similarity 0..1")
    kind: str = Field(
        description='media kind of the catalogue image matched (e.g. "cover", "title_screen"), '
        'or "name" when the text matched a release or ROM name'
    )
    read: str | None = Field(default=None, description="text read in the upload (text only)")
    matched: str | None = Field(default=None, description="what that text matched (text only)")


class Game(BaseModel):
    game_id: str
    name: str
    score: float = Field(description="confidence 0..1 that this is the game (image and text fused)")
    platform: str | None = None
    cover_url: str | None = Field(
        default=None, description="the matched catalogue image, served by this server"
    )
    reason: str = Field(default="", description="why it matched, in words")
    evidence: list[Evidence] = Field(default_factory=list, description="why it matched")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(CaptionResponse):
    games: list[Game] = Field(description="the best games, best first")


class Health(BaseModel):
    status: str
    model: str
    games_indexed: bool = Field(description="whether /v1/search has an index to search")
    workers: int = Field(description="inference threads")
    capacity: int = Field(description="requests running or queued at most; more get 503")
    in_flight: int = Field(description="requests running or queued now")
    max_upload_bytes: int = Field(description="larger uploads get 413")
    max_pixels: int = Field(description="images with more pixels get 413")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, for a person to read")
