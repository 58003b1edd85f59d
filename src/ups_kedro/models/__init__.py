"""Pure torch models, one config dataclass each; ``registry`` rebuilds them from checkpoints."""
