"""Model files -> the working form (a functional tf_keras model). `load_model` picks the frontend
by the file's content, not its name."""
