"""Attention diagnostics of trained (or untrained) LRA models (issue 16).

- `probe`: capture the dense map every attention layer applies (a forward hook that calls the
  backend's `attention_matrix` with the layer's own q, k and mask) and summarise it per layer
  and head with `lotformer.diagnostics`; a fixed batch of a split.
- `callback`: `AttentionDiagnostics`, the optional training callback
  (`callbacks/diagnostics=on`) that logs `diag/<metric>/layer<i>` every k steps and gives the
  results record the diagnostics of the best checkpoint.
- `inspect`: `scripts/inspect_attention.py` as functions: load runs, checkpoints or untrained
  models, run fixed test examples, write PNGs, diagnostics.csv and diagnostics.json.
- `plots`: the attention-map grids and the per-layer summary figure.
"""
