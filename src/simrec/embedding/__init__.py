"""The embedding model at inference time: images to unit vectors on Keras or ONNX Runtime, the
ONNX export, and the training-free descriptors a model may fuse."""
