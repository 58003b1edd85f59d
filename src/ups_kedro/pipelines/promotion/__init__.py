"""``promotion``: gate a trained surrogate against the champion and register it (on request)."""

__all__ = ["create_pipeline"]


def __getattr__(name: str):  # noqa: ANN202 - lazy, so importing .config never imports Kedro
    if name == "create_pipeline":
        from ups_kedro.pipelines.promotion.pipeline import create_pipeline  # noqa: PLC0415

        return create_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
