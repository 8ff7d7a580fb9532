"""Open and run exported artifacts, and read their files: the agent-safe runtime toolkit.

Standard library, numpy and the runtimes (ai_edge_litert, onnxruntime) only; never TensorFlow,
because the on-device agent and its measuring child import it. Import the module you need:

- artifact:    `open_artifact(path, threads, io="float"|"raw", delegate)`, the one loader.
- tensors:     TensorSpec, the ONNX Runtime dtype table, int8 (de)quantisation of I/O.
- tflite_file: `read_tflite`, the one flatbuffer reader (operators, versions, tensors).
- weights:     exact zeros in the weights stored in a file.
- sniff:       which format a file is, by content (standard library only: the agent runs it).

This file imports nothing, so `edgesparse.runtime.sniff` stays free of numpy.
"""
