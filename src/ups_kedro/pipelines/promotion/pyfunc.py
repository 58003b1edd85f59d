"""Import path of :class:`~ups_kedro.serving.pyfunc.SurrogateModel` in models registered before
it moved to :mod:`ups_kedro.serving` (MLflow pickles the class by this module path)."""

from ups_kedro.serving.pyfunc import SurrogateModel, signature  # noqa: F401

__all__ = ["SurrogateModel", "signature"]
