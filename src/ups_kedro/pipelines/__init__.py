"""Kedro pipelines, one package per stage (nodes.py + pipeline.py).

Every stage is a Kedro namespace, so its datasets are ``<stage>.<thing>`` and kedro-viz draws
it as one box.  A stage that consumes another stage's datasets necessarily names them with
their namespace (``data_processing.fields_train``); Kedro warns about any dotted input outside
the node's own namespace, which here is the design, so that one warning is silenced.
"""

import warnings

warnings.filterwarnings(
    "ignore", message="One or more dataset names contain '.' characters", category=UserWarning
)
