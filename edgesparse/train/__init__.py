"""One training loop for every pass that trains (layer 2: toolkits).

`trainer.train` runs Keras `fit` on the tf_keras working form with a loss from `losses`,
regularizers, post-step hooks and the callbacks in `callbacks`; `metrics` holds the Keras-side
measurements (accuracy and agreement in percent, the one unit).
"""
