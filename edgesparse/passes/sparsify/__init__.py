"""Weight sparsity for size: the `sparsify` pass (pass_.py) and the `edgesparse sparsify` command.

refit.py / solver.py  post-training sparse refit (default): OBS masks + least squares, cascaded
magnitude.py          tfmot prune_low_magnitude with a labelled fine-tune
masks.py              patterns (unstructured, N:M), masks, the per-layer budget (ERK)
sizes.py              raw, gzip and TFLite sparse-encoding sizes

Layers as X @ K + b (im2col) are graph/linear.py; the least-squares core is graph/lstsq.py.

This package's __init__ stays light: the CLI imports `commands` at start-up, before TensorFlow.
"""
